"""The results of fine-tuning: finetune.json (schema: cocon/schemas/finetune.schema.json)
per split and over the splits, finetune.md laid out like the paper's Table 3, and per-class
accuracy and confusion matrices."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import jsonschema
import numpy as np

from cocon.config import config_hash, load_schema
from cocon.data.manifest import read_manifest
from cocon.experiments import VIEW_ORDER, parse_init
from cocon.train.finetune import accuracy

log = logging.getLogger(__name__)

ROW_NAMES = {"random": "Random", "cpc": "CPC", "cocon": "CoCon", "cpc+sim": "CPC + sim", "cpc+sync": "CPC + sync",
             "external": "Released weights"}
VIEW_COLUMNS = ["rgb", "flow", "pose", "seg", "ensemble"]


def init_order(name: str) -> tuple:
    """Rows in the paper's order: random, CPC, then the joint methods, fewer views first."""
    init = parse_init(name)
    return list(ROW_NAMES).index(init.method), len(init.views), name


def load_scores(path) -> dict:
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def clip_scores(data: dict, what: str) -> tuple[np.ndarray, np.ndarray] | None:
    """A scores file's clip-level softmax ``[windows, classes]`` (each dense window on its own,
    averaged over its crops) and each window's label; None for a file written before they
    were kept."""
    if "clip_scores" not in data:
        log.warning("%s: the scores file has no clip-level scores (written before they were kept): "
                    "clip-level accuracy is not reported", what)
        return None
    return data["clip_scores"], data["labels"][data["clip_videos"]]


def _clip_metrics(clips: tuple[np.ndarray, np.ndarray] | None, num_classes: int) -> dict:
    if clips is None:
        return {"clip_top1": None, "clip_top5": None}
    scores, labels = clips
    return {"clip_top1": accuracy(scores, labels, 1), "clip_top5": accuracy(scores, labels, min(5, num_classes))}


def _fused_clips(loaded: dict[str, dict], weights: dict[str, float], what: str):
    """The ensemble's clip-level scores: the weighted sum per window, where every view cut the
    same windows (views of models with other clip geometries do not: None)."""
    clips = {view: clip_scores(data, f"{what} {view}") for view, data in loaded.items()}
    if any(value is None for value in clips.values()):
        return None
    reference = next(iter(loaded.values()))
    for data in loaded.values():
        if not (np.array_equal(data["clip_videos"], reference["clip_videos"])
                and np.array_equal(data["clip_starts"], reference["clip_starts"])):
            return None
    return sum(weights[view] * clips[view][0] for view in loaded), next(iter(clips.values()))[1]


def _metrics(scores: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
    predictions = scores.argmax(axis=1)
    confusion = np.zeros((num_classes, num_classes), dtype=int)
    np.add.at(confusion, (labels, predictions), 1)
    per_class = {int(label): float(confusion[label, label] / confusion[label].sum())
                 for label in range(num_classes) if confusion[label].sum()}
    return {"top1": accuracy(scores, labels, 1), "top5": accuracy(scores, labels, min(5, num_classes)),
            "per_class": per_class, "confusion": confusion.tolist()}


def build_report(dataset: dict, split: int, manifest_path, entries: dict[tuple[str, str], dict]) -> tuple[dict, dict]:
    """``entries``: (init, view) -> {"scores": npz path, "checkpoint": path or None}, where
    init is a name of cocon.experiments (random, ucf101/cpc, ucf101/cocon/rgb+flow ...).
    Returns the finetune.json document of ``split`` and the details (per-class accuracy,
    confusion matrices)."""
    rows = read_manifest(manifest_path)
    labels_by_index = {row.label_index: row.label for row in rows}
    num_classes = 1 + max(labels_by_index)
    results, details = [], {"classes": [labels_by_index.get(index, "") for index in range(num_classes)]}
    loaded = {key: load_scores(entry["scores"]) for key, entry in entries.items()}

    def row(init_name: str, view: str, metrics: dict, **fields) -> dict:
        init = parse_init(init_name)
        external = next((entry["external"] for (name, _), entry in entries.items()
                         if name == init_name and entry.get("external")), None)
        return {"init": init_name, "method": init.method, "view_set": list(init.views) or None,
                "pretrained_on": None if external else init.source, "view": view, "top1": metrics["top1"],
                "top5": metrics["top5"], "top1_std": 0.0, "top5_std": 0.0, "clip_top1": metrics["clip_top1"],
                "clip_top5": metrics["clip_top5"],
                "per_split": [{"split": split, "top1": metrics["top1"], "top5": metrics["top5"]}],
                **({"external": external} if external else {}), **fields}

    def detail(metrics: dict, **fields) -> dict:
        return {"video_top1": metrics["top1"], "video_top5": metrics["top5"], "clip_top1": metrics["clip_top1"],
                "clip_top5": metrics["clip_top5"], **fields, "per_class_top1": metrics["per_class"],
                "confusion": metrics["confusion"]}

    weights = dataset["finetune"]["ensemble_weights"]
    for (init, view), data in sorted(loaded.items(), key=lambda item: (init_order(item[0][0]), item[0][1])):
        clips = clip_scores(data, f"{init} {view}")
        metrics = {**_metrics(data["scores"], data["labels"], num_classes), **_clip_metrics(clips, num_classes)}
        details[f"{init}/{view}"] = detail(metrics, num_test_videos=int(len(data["labels"])),
                                           num_test_windows=int(data["windows"]),
                                           crops_per_window=int(data["crops"]) if "crops" in data else 1)
        results.append(row(init, view, metrics, num_test_videos=int(len(data["labels"])),
                           num_test_windows=int(data["windows"]), checkpoint=entries[(init, view)]["checkpoint"]))
    inits = sorted({init for init, _ in loaded}, key=init_order)
    views_of = {init: [view for view in VIEW_ORDER if (init, view) in loaded] for init in inits}

    def fused_metrics(init: str, views) -> tuple[dict, np.ndarray]:
        by_view = {view: loaded[(init, view)] for view in views}
        fused, labels = fuse(by_view, weights, init)
        metrics = {**_metrics(fused, labels, num_classes),
                   **_clip_metrics(_fused_clips(by_view, weights, init), num_classes)}
        return metrics, labels

    for init in inits:
        views = views_of[init]
        metrics, labels = fused_metrics(init, views)
        details[f"{init}/ensemble"] = detail(metrics, views=views)
        results.append(row(init, "ensemble", metrics, views=views,
                           weights={view: weights[view] for view in views},
                           num_test_videos=int(len(labels)), num_test_windows=None, checkpoint=None))
    # the ensemble of every other initialisation over each joint method's views, so that a
    # joint method's ensemble is compared with CPC's over the same views (per-class gains)
    joint_view_sets = {tuple(views_of[init]) for init in inits if parse_init(init).views}
    for init in inits:
        for views in sorted(joint_view_sets):
            key = ensemble_key(init, views)
            if key in details or tuple(views_of[init]) == views or not set(views) <= set(views_of[init]):
                continue
            metrics, _ = fused_metrics(init, views)
            details[key] = detail(metrics, views=list(views))
    document = {"dataset": dataset["name"], "splits": [split], "num_classes": num_classes,
                "config_hash": config_hash({key: dataset[key] for key in ("pretrain", "finetune")}),
                "results": results}
    return document, details


def ensemble_key(init: str, views) -> str:
    """The finetune_details.json key of ``init``'s ensemble over ``views`` (in VIEW_ORDER):
    ``{init}/ensemble`` fuses every view the init was fine-tuned on, ``{init}/ensemble:rgb+flow``
    only rgb and flow."""
    return f"{init}/ensemble:{'+'.join(views)}"


def fuse(scores: dict[str, dict], weights: dict[str, float], what: str) -> tuple[np.ndarray, np.ndarray]:
    """The late-fusion ensemble: the weighted sum of the views' softmax scores, after checking
    that every view scored the same test videos. Returns (fused scores, labels)."""
    views = list(scores)
    reference = scores[views[0]]
    for view in views[1:]:
        if not np.array_equal(scores[view]["video_ids"], reference["video_ids"]):
            raise ValueError(f"{what}: the {view} and {views[0]} scores cover different test videos")
    return sum(weights[view] * scores[view]["scores"] for view in views), reference["labels"]


def summarize_splits(documents: list[dict]) -> dict:
    """One finetune.json over several splits' documents: per (init, view) the mean and the
    standard deviation of top-1 and top-5, and each split's numbers."""
    if len({document["dataset"] for document in documents}) != 1:
        raise ValueError("the finetune.json files to summarize are of different datasets")
    by_key: dict[tuple[str, str], list[dict]] = {}
    for document in documents:
        for result in document["results"]:
            by_key.setdefault((result["init"], result["view"]), []).append(result)
    results = []
    splits = [split for document in documents for split in document["splits"]]
    for key, rows in by_key.items():
        if len(rows) != len(documents):
            raise ValueError(f"{key[0]} {key[1]}: in {len(rows)} of the {len(documents)} splits' results")
        summary = {name: value for name, value in rows[0].items() if name not in ("per_split", "checkpoint")}
        for metric in ("top1", "top5"):
            values = [row[metric] for row in rows]
            summary[metric] = float(np.mean(values))
            summary[f"{metric}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
            clip_values = [row.get(f"clip_{metric}") for row in rows]
            summary[f"clip_{metric}"] = None if None in clip_values else float(np.mean(clip_values))
        summary["per_split"] = [entry for row in rows for entry in row["per_split"]]
        summary["checkpoints"] = [row.get("checkpoint") for row in rows]
        summary["num_test_videos"] = int(sum(row["num_test_videos"] for row in rows))
        summary["num_test_windows"] = None if rows[0]["num_test_windows"] is None else \
            int(sum(row["num_test_windows"] for row in rows))
        results.append(summary)
    return {"dataset": documents[0]["dataset"], "splits": splits, "num_classes": documents[0]["num_classes"],
            "config_hash": documents[0]["config_hash"], "results": results}


def _row_label(result: dict) -> str:
    if result["method"] == "external":
        external = result["external"]
        return f"Released weights: {external.get('label') or external['name']}"
    label = ROW_NAMES[result["method"]]
    if result["view_set"]:
        label += f" ({'+'.join(result['view_set'])})"
    return label + (f", pretrained on {result['pretrained_on']}" if result["pretrained_on"] else "")


def table3_markdown(document: dict) -> str:
    """Our numbers laid out like the paper's Table 3 (its numbers are in paper.md)."""
    by_key = {(row["init"], row["view"]): row for row in document["results"]}
    inits = list(dict.fromkeys(row["init"] for row in document["results"]))
    several = len(document["splits"]) > 1
    splits = ", ".join(map(str, document["splits"]))
    lines = [f"# Fine-tuning results: {document['dataset']}, split{'s' if several else ''} {splits}", "",
             f"Top-1 accuracy (%) on the test split{'s' if several else ''}"
             f"{' (mean ± standard deviation over the splits)' if several else ''}; "
             "softmax averaged over dense windows; the ensemble is the weighted late fusion of the views.", "",
             "| initialisation | " + " | ".join(VIEW_COLUMNS) + " |", "|---" * (len(VIEW_COLUMNS) + 1) + "|"]
    def video_cell(result: dict) -> str:
        if several:
            return f"{100 * result['top1']:.1f} ± {100 * result['top1_std']:.1f}"
        return f"{100 * result['top1']:.1f}"

    def clip_cell(result: dict) -> str:
        value = result.get("clip_top1")
        return "n/a" if value is None else f"{100 * value:.1f}"

    def rows(cell) -> list[str]:
        """One row per initialisation, ``cell(result)`` per view column ("—" where not run)."""
        out = []
        for init in inits:
            cells = ["—" if by_key.get((init, view)) is None else cell(by_key[(init, view)]) for view in VIEW_COLUMNS]
            first = next(row for row in document["results"] if row["init"] == init)
            out.append(f"| {_row_label(first)} | " + " | ".join(cells) + " |")
        return out

    lines += rows(video_cell)
    lines += ["", "Clip-level top-1 (%): every dense test window scored on its own (softmax averaged over its "
              f"crops){', mean over the splits' if several else ''}; many papers report this one instead. "
              "\"n/a\": scores without clip-level entries, or an ensemble of views cut into other windows.", "",
              "| initialisation | " + " | ".join(VIEW_COLUMNS) + " |", "|---" * (len(VIEW_COLUMNS) + 1) + "|"]
    lines += rows(clip_cell)
    released = {row["init"]: row["external"] for row in document["results"] if row.get("external")}
    if released:
        lines.append("")
        lines += [f"- `{init}`: released weights, not pretrained here: `{external['path']}`"
                  + (f" ({external['format']})" if external.get("format") else "")
                  for init, external in released.items()]
    lines += ["", f"Config hash `{document['config_hash']}`. The paper's numbers are beside ours in paper.md."]
    return "\n".join(lines) + "\n"


def write_document(document: dict, json_path, markdown_path) -> dict:
    jsonschema.validate(document, load_schema("finetune.schema.json"))
    Path(json_path).write_text(json.dumps(document, indent=2) + "\n")
    Path(markdown_path).write_text(table3_markdown(document))
    return document


def write_report(dataset: dict, split: int, manifest_path, entries: dict[tuple[str, str], dict], json_path,
                 markdown_path, details_path) -> dict:
    document, details = build_report(dataset, split, manifest_path, entries)
    write_document(document, json_path, markdown_path)
    Path(details_path).write_text(json.dumps(details, indent=1) + "\n")
    return document


def write_split_summary(split_reports: list, json_path, markdown_path) -> dict:
    documents = [json.loads(Path(path).read_text()) for path in split_reports]
    return write_document(summarize_splits(documents), json_path, markdown_path)


def seeds_markdown(documents: list[dict]) -> str:
    """Top-1 mean and standard deviation over runs that differ only in their seeds."""
    values: dict[tuple[str, str], list[float]] = {}
    for document in documents:
        for row in document["results"]:
            values.setdefault((row["method"], row["view"]), []).append(100 * row["top1"])
    views = ["rgb", "flow", "pose", "seg", "ensemble"]
    methods = [method for method in ROW_NAMES if any(key[0] == method for key in values)]
    lines = [f"Top-1 (%) over {len(documents)} seeds ({', '.join(d['dataset'] for d in documents)}): "
             "mean ± standard deviation", "", "| initialisation | " + " | ".join(views) + " |",
             "|---" * (len(views) + 1) + "|"]
    for method in methods:
        cells = []
        for view in views:
            numbers = values.get((method, view))
            cells.append(f"{np.mean(numbers):.1f} ± {np.std(numbers, ddof=1) if len(numbers) > 1 else 0:.1f}"
                         if numbers else "—")
        lines.append(f"| {ROW_NAMES[method]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
