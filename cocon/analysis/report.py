"""``results/<dataset>/report.html``: one self-contained page with everything the workflow
measured on a dataset, to read in a browser or send as one file.

Sections: the paper's tables (paper.md), the fine-tuning results (finetune.md), retrieval,
the linear probe, class consistency, every figure of the analyses with its caption and a
link to its data, the dataset summary (usable and excluded videos with their reasons, the
view shards) and contact sheets of a few test videos' views. Images are embedded as data
URIs, so the page needs no other file; the links to the figures' data are relative to the
page and work where the workflow wrote them.
"""
from __future__ import annotations

import base64
import collections
import csv
import datetime
import html
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import jinja2
import markdown

from cocon.data.manifest import read_manifest
from cocon.experiments import analysis_split
from cocon.views.show import contact_sheet

log = logging.getLogger(__name__)

FIGURE_INDEX = "index.json"
CONTACT_SHEET_ROWS = 4

TEMPLATE = jinja2.Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{ title }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
h1 { border-bottom: 2px solid #444; } h2 { border-bottom: 1px solid #aaa; margin-top: 2em; }
nav ul { columns: 2; } table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; } th { background: #f0f0f0; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.9em; color: #444; max-width: 60em; } .note { color: #555; font-size: 0.9em; }
</style>
</head>
<body>
<h1>{{ title }}</h1>
<p class="note">{{ subtitle }}</p>
<nav><ul>{% for section in sections %}<li><a href="#{{ section.anchor }}">{{ section.title }}</a></li>{% endfor %}</ul></nav>
{% for section in sections %}
<section id="{{ section.anchor }}">
<h2>{{ section.title }}</h2>
{% if section.intro %}<p class="note">{{ section.intro }}</p>{% endif %}
{{ section.html | safe }}
{% for figure in section.figures %}
<figure id="{{ figure.anchor }}">
<img src="{{ figure.src }}" alt="{{ figure.title }}">
<figcaption><strong>{{ figure.title }}.</strong> {{ figure.caption }}{% if figure.data %} Data: <a href="{{ figure.data }}">{{ figure.data_name }}</a>.{% endif %}</figcaption>
</figure>
{% endfor %}
</section>
{% endfor %}
</body>
</html>
""", autoescape=True)


@dataclass
class ReportJob:
    dataset: dict
    paper: str | None          # paper.md (None: the dataset builds no paper tables)
    finetune: str              # finetune.md
    retrieval: str             # retrieval.md of the analysed split
    probe: str                 # probe.md
    consistency: str           # consistency.md
    figures: str               # the analyses' figures folder, with its index.json
    manifest: str
    views: str                 # views.tsv
    views_dir: str
    output: str


def data_uri(png: str | os.PathLike) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(png).read_bytes()).decode("ascii")


def markdown_html(path: str | os.PathLike, drop_title: bool = True) -> str:
    """A markdown file as HTML; its first-level title is dropped (the section has one)."""
    text = Path(path).read_text()
    if drop_title:
        text = "\n".join(line for line in text.splitlines() if not line.startswith("# "))
    return markdown.markdown(text, extensions=["tables"])


def _tsv_rows(path: str | os.PathLike) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


TABLE = jinja2.Template("<table><tr>{% for cell in header %}<th>{{ cell }}</th>{% endfor %}</tr>"
                        "{% for row in rows %}<tr>{% for cell in row %}<td>{{ cell }}</td>{% endfor %}</tr>"
                        "{% endfor %}</table>", autoescape=True)


def _table(header: list[str], rows: list[list]) -> str:
    return TABLE.render(header=header, rows=rows)


def dataset_summary(job: ReportJob) -> str:
    """Usable videos per role of the analysed split, the excluded videos with their reasons,
    and the view shards (views.tsv)."""
    split = analysis_split(job.dataset)
    rows = read_manifest(job.manifest)
    usable = [row for row in rows if row.ok]
    excluded = [row for row in rows if not row.ok]
    roles = collections.Counter(row.role(split) for row in usable)
    parts = [_table(["", "videos"], [["listed", len(rows)], ["usable", len(usable)], ["excluded", len(excluded)],
                                     [f"usable train videos, split {split}", roles.get("train", 0)],
                                     [f"usable test videos, split {split}", roles.get("test", 0)],
                                     ["classes with a usable video", len({row.label_index for row in usable})]])]
    if excluded:
        reasons = collections.Counter(row.status.split(":")[0] for row in excluded)
        parts.append("<h3>Excluded videos by reason</h3>" +
                     _table(["reason", "videos"], [[reason, count] for reason, count in reasons.most_common()]))
        parts.append("<h3>Excluded videos</h3>" +
                     _table(["video", "class", "status"], [[row.video_id, row.label, row.status] for row in excluded]))
    else:
        parts.append("<p>No listed video was excluded.</p>")
    view_rows = _tsv_rows(job.views)
    if view_rows:
        parts.append("<h3>View shards</h3>" + _table(list(view_rows[0]), [list(row.values()) for row in view_rows]))
    return "\n".join(parts)


def contact_sheets(job: ReportJob, count: int) -> list[dict]:
    """Contact sheets of the first test video of the first ``count`` classes of the analysed split."""
    split = analysis_split(job.dataset)
    chosen = {}
    for row in read_manifest(job.manifest):
        if row.ok and row.role(split) == "test" and row.label_index not in chosen and len(chosen) < count:
            chosen[row.label_index] = row
    figures = []
    with tempfile.TemporaryDirectory() as folder:
        for row in chosen.values():
            png = contact_sheet(job.views_dir, job.manifest, row.video_id, Path(folder) / f"{row.video_id}.png",
                                rows=CONTACT_SHEET_ROWS)
            figures.append({"anchor": f"sheet-{row.video_id}", "src": data_uri(png), "title": row.video_id,
                            "caption": f"Class {row.label}. Evenly spaced frames (rows); per row, from the left: "
                                       "rgb with the person mask tinted and the skeleton read back from the pose "
                                       "heatmaps, flow as colour (hue: direction, brightness: magnitude), the "
                                       "pose heatmaps (maximum over keypoints) and the segmentation mask, as "
                                       "far as the dataset has these views.",
                            "data": None})
    return figures


def figure_sections(figures_dir: str | os.PathLike, page: Path) -> list[dict]:
    """The analyses' figures, grouped into sections by their index's ``section``."""
    figures_dir = Path(figures_dir)
    index_path = figures_dir / FIGURE_INDEX
    if not index_path.is_file():
        raise FileNotFoundError(f"{index_path}: the figure index is missing (rerun the analyse rule)")
    sections: dict[str, dict] = {}
    for entry in json.loads(index_path.read_text()):
        section = sections.setdefault(entry["section"], {"anchor": "figures-" + str(len(sections)),
                                                         "title": entry["section"], "intro": "", "html": "",
                                                         "figures": []})
        if entry["png"] is None:
            # a figure the data could not give: its reason stands in its place
            section["html"] += f"<p class=\"note\"><strong>{html.escape(entry['title'])}</strong>: " \
                               f"{html.escape(entry['caption'])}.</p>"
            continue
        png = figures_dir / entry["png"]
        if not png.is_file():
            raise FileNotFoundError(f"{png}: listed in {index_path} but missing")
        data = figures_dir / entry["data"] if entry.get("data") else None
        section["figures"].append({"anchor": "figure-" + Path(entry["png"]).stem, "src": data_uri(png),
                                   "title": entry["title"], "caption": entry["caption"],
                                   "data": os.path.relpath(data, page.parent) if data else None,
                                   "data_name": data.name if data else None})
    return list(sections.values())


def write_report(job: ReportJob, contact_sheet_count: int = 3) -> Path:
    page = Path(job.output)
    split = analysis_split(job.dataset)
    sections = []
    if job.paper:
        sections.append({"anchor": "paper", "title": "The paper's tables", "html": markdown_html(job.paper),
                         "intro": "", "figures": []})
    sections += [
        {"anchor": "finetune", "title": "Fine-tuning", "html": markdown_html(job.finetune), "intro": "", "figures": []},
        {"anchor": "retrieval", "title": "Nearest-neighbour retrieval", "html": markdown_html(job.retrieval),
         "intro": "", "figures": []},
        {"anchor": "probe", "title": "Linear probe", "html": markdown_html(job.probe), "intro": "", "figures": []},
        {"anchor": "consistency", "title": "Class consistency (the paper's Tables 4 and 7)",
         "html": markdown_html(job.consistency), "intro": "", "figures": []},
    ]
    sections += figure_sections(job.figures, page)
    sections.append({"anchor": "dataset", "title": "Dataset", "html": dataset_summary(job), "intro": "",
                     "figures": []})
    sections.append({"anchor": "views", "title": "Views of a few test videos", "html": "", "figures":
                     contact_sheets(job, contact_sheet_count),
                     "intro": "Contact sheets read back from the view shards, to check the extraction by eye."})
    name = job.dataset["name"]
    page_html = TEMPLATE.render(
        title=f"CoCon: {name}", sections=sections,
        subtitle=f"Analyses on split {split} (test videos query, train videos form the gallery; encoders frozen). "
                 f"Written {datetime.datetime.now().astimezone().isoformat(timespec='minutes')}.")
    page.parent.mkdir(parents=True, exist_ok=True)
    tmp = page.with_name(page.name + ".tmp")
    tmp.write_text(page_html)
    tmp.replace(page)
    log.info("wrote %s: %d sections, %.1f MB", page, len(sections), page.stat().st_size / 1e6)
    return page
