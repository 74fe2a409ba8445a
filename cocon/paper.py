"""paper.json and paper.md: the paper's Tables 1, 2, 3, 5 and 6 with our numbers beside
the paper's (schema: cocon/schemas/paper.schema.json). Which runs fill each cell is
decided by cocon.experiments.paper_cells; this module reads their test scores."""
from __future__ import annotations

import functools
import json
from pathlib import Path

import jsonschema
import numpy as np

from cocon.config import load_schema
from cocon.experiments import TABLES, Cell
from cocon.train.evaluate import fuse, load_scores
from cocon.train.finetune import accuracy


def cell_top1(cell: Cell, weights: dict[str, float], load_scores=load_scores) -> list[float]:
    """The cell's top-1 on each of its splits; ``load_scores`` reads a scores file."""
    values = []
    for split in cell.splits:
        if cell.view == "ensemble":
            scores = {view: load_scores(f"results/{cell.dataset}/split{split}/finetune/{cell.init}/{view}.scores.npz")
                      for view in cell.ensemble_views}
            fused, labels = fuse(scores, weights, f"{cell.dataset} split {split} {cell.init}")
            values.append(accuracy(fused, labels))
        else:
            data = load_scores(f"results/{cell.dataset}/split{split}/finetune/{cell.init}/{cell.view}.scores.npz")
            values.append(accuracy(data["scores"], data["labels"]))
    return values


def build_paper(dataset: str, cells: list[Cell], ensemble_weights: dict[str, dict]) -> dict:
    """``ensemble_weights``: each dataset's finetune.ensemble_weights."""
    # the tables share runs (Table 3's CoCon is Table 5's 4 views): read each scores file once
    cached_scores = functools.cache(load_scores)
    tables = []
    for table in TABLES:
        rows = []
        for row in table.rows:
            entries = []
            for label, _, _ in table.columns:
                cell = next(cell for cell in cells if (cell.table, cell.row, cell.column) == (table.number, row.label,
                                                                                              label))
                entry = {"column": label, "paper": cell.paper, "run": cell.run}
                if cell.run:
                    values = cell_top1(cell, ensemble_weights[cell.dataset], cached_scores)
                    entry.update(top1=float(np.mean(values)),
                                 top1_std=float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                                 per_split=[{"split": split, "top1": value} for split, value in zip(cell.splits,
                                                                                                     values)],
                                 dataset=cell.dataset, init=cell.init, view=cell.view,
                                 source="released" if cell.released else "ours")
                    if cell.released:
                        entry["released"] = {"name": cell.released, "path": cell.released_path}
                else:
                    entry["reason"] = cell.reason
                entries.append(entry)
            rows.append({"label": row.label, "cells": entries})
        tables.append({"table": table.number, "title": table.title, "columns": [label for label, _, _ in table.columns],
                       "mean_over_splits": table.all_splits, "rows": rows})
    return {"dataset": dataset, "tables": tables}


def _cell_text(entry: dict, spread: bool) -> str:
    paper = "—" if entry["paper"] is None else f"{entry['paper']:.1f}"
    if not entry["run"]:
        return f"not run ({paper})"
    ours = f"{100 * entry['top1']:.1f}"
    if spread and len(entry["per_split"]) > 1:
        ours += f" ± {100 * entry['top1_std']:.1f}"
    return f"**{ours}**{RELEASED_MARK if entry['source'] == 'released' else ''} ({paper})"


RELEASED_MARK = "†"


def paper_markdown(document: dict) -> str:
    lines = [f"# The paper's tables: {document['dataset']}", "",
             "Top-1 accuracy (%) after fine-tuning: **ours** (the paper's). \"not run\" cells say why in the notes "
             "under each table; their settings are `paper.tables`, `paper.hmdb51` and `paper.kinetics400` in the "
             "dataset config. The UCF columns are this dataset.", ""]
    for table in document["tables"]:
        lines += [f"## Table {table['table']}: {table['title']}", "",
                  "| | " + " | ".join(table["columns"]) + " |", "|---" * (len(table["columns"]) + 1) + "|"]
        reasons: dict[str, list[str]] = {}
        for row in table["rows"]:
            lines.append(f"| {row['label']} | " + " | ".join(_cell_text(entry, table["mean_over_splits"])
                                                           for entry in row["cells"]) + " |")
            for entry in row["cells"]:
                if not entry["run"]:
                    reasons.setdefault(entry["reason"], []).append(f"{row['label']} / {entry['column']}")
        lines.append("")
        if table["mean_over_splits"]:
            splits = sorted({item["split"] for row in table["rows"] for entry in row["cells"] if entry["run"]
                             for item in entry["per_split"]})
            if len(splits) > 1:
                lines += [f"Mean ± standard deviation over splits {', '.join(map(str, splits))}.", ""]
            elif splits:
                lines += [f"Split {splits[0]} alone: `official_splits` of the evaluated dataset has one split.", ""]
        released = {(entry["released"]["name"], entry["released"]["path"], entry["dataset"])
                    for row in table["rows"] for entry in row["cells"] if entry["run"] and entry["source"] == "released"}
        for name, path, dataset in sorted(released):
            lines.append(f"- {RELEASED_MARK} fine-tuned from released weights, not pretrained here: `external/{name}` "
                         f"of {dataset} (`{path}`)")
        for reason, where in reasons.items():
            lines.append(f"- not run: {reason} ({len(where)} cell{'s' if len(where) > 1 else ''})")
        if reasons or released:
            lines.append("")
    return "\n".join(lines)


def write_paper(dataset: str, cells: list[Cell], ensemble_weights: dict[str, dict], json_path, markdown_path) -> dict:
    document = build_paper(dataset, cells, ensemble_weights)
    jsonschema.validate(document, load_schema("paper.schema.json"))
    Path(json_path).write_text(json.dumps(document, indent=2) + "\n")
    Path(markdown_path).write_text(paper_markdown(document))
    return document
