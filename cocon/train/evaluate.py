"""The results of fine-tuning: finetune.json (schema: cocon/schemas/finetune.schema.json),
finetune.md laid out like the paper's Table 3, and per-class accuracy and confusion matrices."""
from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np

from cocon.config import config_hash, load_schema
from cocon.data.manifest import read_manifest
from cocon.train.finetune import accuracy

# The paper's Table 3: UCF101 split 1, pretrained on UCF101, top-1 %
PAPER_TABLE3 = {
    "random": {"rgb": 46.7, "flow": 65.3},
    "cpc": {"rgb": 63.7, "flow": 69.8},
    "cocon (2 views)": {"rgb": 67.8, "flow": 72.5},
    "cocon (4 views)": {"rgb": 71.0, "flow": 74.5, "pose": 58.7, "seg": 55.8},
}
ROW_NAMES = {"random": "Random", "cpc": "CPC", "cocon": "CoCon", "cpc+sim": "CPC + sim", "cpc+sync": "CPC + sync"}


def load_scores(path) -> dict:
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def _metrics(scores: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
    predictions = scores.argmax(axis=1)
    confusion = np.zeros((num_classes, num_classes), dtype=int)
    np.add.at(confusion, (labels, predictions), 1)
    per_class = {int(label): float(confusion[label, label] / confusion[label].sum())
                 for label in range(num_classes) if confusion[label].sum()}
    return {"top1": accuracy(scores, labels, 1), "top5": accuracy(scores, labels, min(5, num_classes)),
            "per_class": per_class, "confusion": confusion.tolist()}


def build_report(dataset: dict, manifest_path, entries: dict[tuple[str, str], dict]) -> tuple[dict, dict]:
    """``entries``: (init, view) -> {"scores": npz path, "checkpoint": path or None}. Returns the
    finetune.json document and the details (per-class accuracy, confusion matrices)."""
    settings = dataset["finetune"]
    rows = read_manifest(manifest_path)
    labels_by_index = {row.label_index: row.label for row in rows}
    num_classes = 1 + max(labels_by_index)
    pretrained_on = settings["pretrained_on"] or dataset["name"]
    results, details = [], {"classes": [labels_by_index.get(index, "") for index in range(num_classes)]}
    loaded = {key: load_scores(entry["scores"]) for key, entry in entries.items()}
    for (init, view), data in sorted(loaded.items()):
        metrics = _metrics(data["scores"], data["labels"], num_classes)
        details[f"{init}/{view}"] = {"per_class_top1": metrics["per_class"], "confusion": metrics["confusion"]}
        results.append({"method": init, "view": view, "top1": metrics["top1"], "top5": metrics["top5"],
                        "num_test_videos": int(len(data["labels"])), "num_test_windows": int(data["windows"]),
                        "checkpoint": entries[(init, view)]["checkpoint"],
                        "pretrained_on": None if init == "random" else pretrained_on})
    weights = settings["ensemble_weights"]
    for init in sorted({init for init, _ in loaded}):
        views = sorted(view for method, view in loaded if method == init)
        reference = loaded[(init, views[0])]
        for view in views:
            if not np.array_equal(loaded[(init, view)]["video_ids"], reference["video_ids"]):
                raise ValueError(f"{init}: the {view} and {views[0]} scores cover different test videos")
        fused = sum(weights[view] * loaded[(init, view)]["scores"] for view in views)
        metrics = _metrics(fused, reference["labels"], num_classes)
        details[f"{init}/ensemble"] = {"per_class_top1": metrics["per_class"], "confusion": metrics["confusion"]}
        results.append({"method": init, "view": "ensemble", "views": views,
                        "weights": {view: weights[view] for view in views},
                        "top1": metrics["top1"], "top5": metrics["top5"],
                        "num_test_videos": int(len(reference["labels"])), "num_test_windows": None,
                        "checkpoint": None, "pretrained_on": None if init == "random" else pretrained_on})
    document = {"dataset": dataset["name"], "split": dataset["split"], "num_classes": num_classes,
                "config_hash": config_hash({key: dataset[key] for key in ("pretrain", "finetune", "split")}),
                "results": results}
    return document, details


def table3_markdown(document: dict) -> str:
    """Our numbers laid out like the paper's Table 3, then the paper's for reference."""
    views = ["rgb", "flow", "pose", "seg", "ensemble"]
    by_key = {(row["method"], row["view"]): row for row in document["results"]}
    methods = [method for method in ROW_NAMES if any(key[0] == method for key in by_key)]
    lines = [f"# Fine-tuning results: {document['dataset']}, split {document['split']}", "",
             f"Top-1 accuracy (%) on the test split, {document['results'][0]['num_test_videos']} videos; "
             "softmax averaged over dense windows; the ensemble is the weighted late fusion of the views.", "",
             "| initialisation | " + " | ".join(views) + " |", "|---" * (len(views) + 1) + "|"]
    for method in methods:
        cells = [f"{100 * by_key[(method, view)]['top1']:.1f}" if (method, view) in by_key else "—" for view in views]
        lines.append(f"| {ROW_NAMES[method]} | " + " | ".join(cells) + " |")
    lines += ["", f"Config hash `{document['config_hash']}`.", "",
              "The paper's Table 3 (UCF101 split 1, pretrained on UCF101, top-1 %), for reference:", "",
              "| initialisation | rgb | flow | pose | seg |", "|---|---|---|---|---|"]
    for method, numbers in PAPER_TABLE3.items():
        lines.append(f"| {method} | " + " | ".join(str(numbers.get(view, "—")) for view in ("rgb", "flow", "pose",
                                                                                            "seg")) + " |")
    return "\n".join(lines) + "\n"


def write_report(dataset: dict, manifest_path, entries: dict[tuple[str, str], dict], json_path, markdown_path,
                 details_path) -> dict:
    document, details = build_report(dataset, manifest_path, entries)
    jsonschema.validate(document, load_schema("finetune.schema.json"))
    Path(json_path).write_text(json.dumps(document, indent=2) + "\n")
    Path(markdown_path).write_text(table3_markdown(document))
    Path(details_path).write_text(json.dumps(details, indent=1) + "\n")
    return document


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
