"""The evidence benchmark's summary (DESIGN.md section 13, README "Evidence"):
results/evidence/evidence.json and evidence.md from runs that differ only in their
training seed.

Per initialisation (random, CPC, CoCon) and view, on frozen encoders as the paper's Tables
4/7 and Fig. 10 look at them: retrieval R@1 and R@5, linear-probe top-1, and the AUC of
telling same-class from other-class test pairs by the raw cosine of their features; and
fine-tuned top-1 where it ran. Each cell holds the mean and the standard deviation over
seeds and every seed's value; ``paired`` holds CoCon − CPC per seed, its mean and a 95%
t-interval; ``conclusion`` says in plain words which orderings the seeds support.

Accuracies and recalls are in percent, AUCs in [0, 1].
"""
from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from cocon.analysis.features import FeatureSet
from cocon.analysis.pairs import DEFAULT_MEMORY_MB, pair_histogram
from cocon.data.clips import ClipDataset, ClipSpec, split_videos
from cocon.experiments import VIEW_ORDER, parse_init
from cocon.losses import cocon_loss, pool_blocks
from cocon.train.pretrain import load_pretrained

METRICS = ("retrieval_r1", "retrieval_r5", "probe_top1", "auc", "finetune_top1")
METRIC_NAMES = {"retrieval_r1": "R@1", "retrieval_r5": "R@5", "probe_top1": "probe top-1", "auc": "AUC",
                "finetune_top1": "fine-tuned top-1"}
INIT_ORDER = ("random", "cpc", "cocon")
PAIRS = (("cocon", "cpc"), ("cpc", "random"), ("cocon", "random"))
# the seed-to-seed spread the benchmark is built to stay under (points), so that a difference
# of the paper's size (7 points) shows
SPREAD_GOAL = 3.0


@dataclass
class SeedRun:
    """One training seed's outputs."""

    dataset: str
    retrieval: str                     # split{k}/analysis/retrieval.json
    probe: str                         # split{k}/analysis/probe.json
    features: dict[tuple[str, str], str]  # (init, view) -> features .npz
    finetune: str | None = None        # split{k}/finetune.json, where fine-tuning ran
    runs: dict[str, str] = field(default_factory=dict)  # joint init -> its metrics.csv
    cpc: dict[str, str] = field(default_factory=dict)   # view -> the CPC checkpoint CoCon starts from
    joint: str | None = None           # CoCon's checkpoint (rgb+flow)


def init_kind(name: str) -> str:
    """'evidence_seed1/cocon/rgb+flow' -> 'cocon': the same initialisation across seed datasets.
    A joint method other than cocon, or cocon on another view set, keeps its method and set."""
    init = parse_init(name)
    if init.method in ("random", "cpc"):
        return init.method
    return init.method if (init.method == "cocon" and init.views == ("rgb", "flow")) else \
        f"{init.method} ({init.view_set})"


def seed_metrics(run: SeedRun, memory_mb: float = DEFAULT_MEMORY_MB) -> dict[str, dict[str, dict[str, float]]]:
    """{init kind: {view: {metric: value}}} of one seed."""
    values: dict[str, dict[str, dict[str, float]]] = {}

    def put(init: str, view: str, metric: str, value: float) -> None:
        values.setdefault(init_kind(init), {}).setdefault(view, {})[metric] = value

    for row in json.loads(Path(run.retrieval).read_text())["rows"]:
        for k, metric in (("1", "retrieval_r1"), ("5", "retrieval_r5")):
            if row["recall"].get(k) is not None:
                put(row["init"], row["view"], metric, 100.0 * row["recall"][k])
    for row in json.loads(Path(run.probe).read_text())["rows"]:
        put(row["init"], row["view"], "probe_top1", 100.0 * row["top1"])
    for (init, view), path in run.features.items():
        features = FeatureSet.load(path)
        test = features.role("test")
        auc = pair_histogram(features.context[test], features.labels[test], "raw", memory_mb=memory_mb).auc
        if auc is not None:
            put(init, view, "auc", auc)
    if run.finetune:
        for row in json.loads(Path(run.finetune).read_text())["results"]:
            put(row["init"], row["view"], "finetune_top1", 100.0 * row["top1"])
    return values


def interval95(values: list[float]) -> list[float | None]:
    """The 95% t-interval of the mean of ``values``; [None, None] from a single value."""
    if len(values) < 2:
        return [None, None]
    mean, sem = float(np.mean(values)), float(np.std(values, ddof=1) / math.sqrt(len(values)))
    half = float(stats.t.ppf(0.975, len(values) - 1)) * sem
    return [mean - half, mean + half]


def _ordered_views(views) -> list[str]:
    return [view for view in (*VIEW_ORDER, "fused", "ensemble") if view in views]


def summarize(seeds: list[int], per_seed: list[dict], test_videos: int, wall_seconds: float | None) -> dict:
    """The evidence document from each seed's seed_metrics (in the order of ``seeds``)."""
    if len(seeds) != len(per_seed) or not seeds:
        raise ValueError(f"{len(seeds)} seeds for {len(per_seed)} runs")
    kinds = [kind for kind in INIT_ORDER if any(kind in values for values in per_seed)]
    kinds += sorted({kind for values in per_seed for kind in values} - set(kinds))
    cells: dict = {}
    for kind in kinds:
        views = _ordered_views({view for values in per_seed for view in values.get(kind, {})})
        for view in views:
            for metric in METRICS:
                series = [values.get(kind, {}).get(view, {}).get(metric) for values in per_seed]
                if any(value is None for value in series):
                    continue
                cells.setdefault(kind, {}).setdefault(view, {})[metric] = {
                    "mean": float(np.mean(series)), "std": float(np.std(series, ddof=1)) if len(series) > 1 else 0.0,
                    "per_seed": [float(value) for value in series]}
    paired: dict = {}
    for better, worse in PAIRS:
        if better not in cells or worse not in cells:
            continue
        for view, metrics in cells[better].items():
            for metric, cell in metrics.items():
                other = cells[worse].get(view, {}).get(metric)
                if other is None:
                    continue
                differences = [a - b for a, b in zip(cell["per_seed"], other["per_seed"])]
                paired.setdefault(f"{better}-{worse}", {}).setdefault(view, {})[metric] = {
                    "mean": float(np.mean(differences)), "ci95": interval95(differences), "per_seed": differences}
    document = {"seeds": list(seeds), "test_videos": int(test_videos), "wall_seconds": wall_seconds,
                "cells": cells, "paired": paired}
    document["conclusion"] = conclusion(document)
    return document


def _verdict(entry: dict) -> str:
    low, high = entry["ci95"]
    if low is None:
        return "one seed: no interval"
    if low > 0:
        return "holds"
    if high < 0:
        return "reversed"
    return "not shown (the interval includes 0)"


def conclusion(document: dict) -> str:
    """Which orderings the seeds support, per view, on the frozen-encoder metrics."""
    parts = []
    seeds = len(document["seeds"])
    cocon_cpc = document["paired"].get("cocon-cpc", {})
    for view in _ordered_views(cocon_cpc):
        verdicts = []
        for metric in ("probe_top1", "retrieval_r1", "auc"):
            entry = cocon_cpc[view].get(metric)
            if entry is not None:
                verdicts.append(f"{METRIC_NAMES[metric]} {entry['mean']:+.{3 if metric == 'auc' else 1}f}: "
                                f"{_verdict(entry)}")
        parts.append(f"{view}, CoCon − CPC over {seeds} seeds: " + "; ".join(verdicts))
    cpc_random = document["paired"].get("cpc-random", {})
    for view in _ordered_views(cpc_random):
        entry = cpc_random[view].get("probe_top1")
        if entry is not None:
            parts.append(f"{view}, CPC − random probe top-1 {entry['mean']:+.1f}: {_verdict(entry)}")
    spread = [f"{kind} {view} {METRIC_NAMES[metric]} {cell['std']:.1f}"
              for kind, views in document["cells"].items() for view, metrics in views.items()
              for metric, cell in metrics.items()
              if view == "rgb" and metric in ("probe_top1", "retrieval_r1") and cell["std"] > SPREAD_GOAL]
    parts.append("seed-to-seed standard deviation of rgb probe top-1 and R@1: "
                 + (f"above {SPREAD_GOAL:g} points for {', '.join(spread)}" if spread else
                    f"at most {SPREAD_GOAL:g} points everywhere"))
    return ". ".join(parts) + "."


def loss_terms(metrics_csv: str | os.PathLike, lambda_: float, alpha: float) -> dict:
    """A joint run's loss terms at its first and last epoch (its metrics.csv), and the share
    of the total that the cross-view terms make up as the total weighs them (lambda x sync +
    lambda x alpha x sim). Returns {"epochs", "first": {term: value}, "last": {...},
    "cross_view_share": [first, last]}."""
    with open(metrics_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ValueError(f"{metrics_csv}: no epoch recorded")

    def terms(row: dict) -> dict[str, float]:
        return {name: float(value) for name, value in row.items()
                if value not in ("", None) and name.split("/")[0] in ("cpc", "sync", "sim")}

    def cross_view_share(row: dict) -> float:
        weighted = sum(lambda_ * value * (alpha if name.startswith("sim/") else 1.0)
                       for name, value in terms(row).items() if not name.startswith("cpc/"))
        return weighted / float(row["loss"])

    return {"epochs": len(rows), "first": terms(rows[0]), "last": terms(rows[-1]),
            "cross_view_share": [cross_view_share(rows[0]), cross_view_share(rows[-1])]}


def cross_view_gradients(models: dict[str, torch.nn.Module], dataset: dict, views_dir, manifest, split: int = 1,
                         batches: int = 4) -> dict:
    """How strongly each loss term pulls on the rgb encoder: per term of Lcocon (weighted as
    the total weighs it), the norm of its gradient with respect to the rgb encoder's weights,
    averaged over ``batches`` batches of training clips (epoch 0's draws), and the cosine
    between the gradient of rgb's own Lcpc and that of the cross-view terms together.
    ``models``: view -> a view's DPC, e.g. the CPC encoders CoCon starts from, or CoCon's."""
    settings = dataset["pretrain"]
    train, _, _ = split_videos(manifest, split, settings["val_fraction"], settings["seed"])
    views = sorted(models)
    clips = ClipDataset(train, views_dir, views, {view: settings["input_size"][view] for view in views},
                        ClipSpec(settings["num_blocks"], settings["block_length"], settings["frame_stride"]),
                        train=True, seed=settings["seed"])
    weights = list(models["rgb"].encoder.parameters())
    norms: dict[str, list[float]] = {}
    cosines = []
    for model in models.values():
        model.train()
    for number in range(batches):
        items = range(number * settings["batch_size"], (number + 1) * settings["batch_size"])
        batch = torch.utils.data.default_collate([clips[(0, item % len(clips))] for item in items])
        preds, gts, blocks = {}, {}, {}
        for view in views:
            preds[view], gts[view], z = models[view](batch[view])
            blocks[view] = pool_blocks(z)
        _, terms = cocon_loss(preds, gts, blocks, lambda_=settings["lambda"], alpha=settings["alpha"],
                              temperature=settings["temperature"], sync_p=settings["sync_p"])
        weighted = {name: term * (1.0 if name.startswith("cpc/") else settings["lambda"])
                    * (settings["alpha"] if name.startswith("sim/") else 1.0) for name, term in terms.items()
                    if name.startswith("cpc/rgb") or not name.startswith("cpc/")}
        flat = {}
        for name, term in weighted.items():
            grads = torch.autograd.grad(term, weights, retain_graph=True, allow_unused=True)
            flat[name] = torch.cat([(g if g is not None else torch.zeros_like(w)).reshape(-1)
                                    for g, w in zip(grads, weights)])
            norms.setdefault(name, []).append(float(flat[name].norm()))
        cross = sum(vector for name, vector in flat.items() if not name.startswith("cpc/"))
        cosines.append(float(torch.nn.functional.cosine_similarity(flat["cpc/rgb"], cross, dim=0)))
    return {"gradient_norm": {name: float(np.mean(values)) for name, values in norms.items()},
            "cosine_cpc_rgb_vs_cross_view": float(np.mean(cosines)), "batches": batches}


def wall_seconds(logs: list[str | os.PathLike]) -> float | None:
    """Seconds from the oldest file under ``logs`` (the runs' log folders) to now: the wall
    time of a run that built everything at once (a partial rerun counts from the older outputs)."""
    times = [path.stat().st_mtime for folder in logs for path in Path(folder).rglob("*") if path.is_file()]
    return round(time.time() - min(times), 1) if times else None


def evidence_markdown(document: dict, diagnostics: dict | None = None) -> str:
    seeds = document["seeds"]
    lines = [f"# Evidence: random, CPC and CoCon on the motion benchmark, {len(seeds)} training seeds "
             f"({', '.join(map(str, seeds))})", "",
             f"{document['test_videos']} test videos; frozen encoders unless said; mean ± standard deviation over "
             "seeds (R@k and top-1 in %, AUC of same-class against other-class pairs by the raw cosine)."
             + (f" Wall time {document['wall_seconds'] / 60:.1f} min." if document.get("wall_seconds") else ""), ""]
    metrics = [metric for metric in METRICS if any(metric in by_metric for views in document["cells"].values()
                                                   for by_metric in views.values())]
    lines += ["| init | view | " + " | ".join(METRIC_NAMES[metric] for metric in metrics) + " |",
              "|---|---|" + "---:|" * len(metrics)]
    for kind, views in document["cells"].items():
        for view, by_metric in views.items():
            cells = []
            for metric in metrics:
                cell = by_metric.get(metric)
                digits = 3 if metric == "auc" else 1
                cells.append("—" if cell is None else f"{cell['mean']:.{digits}f} ± {cell['std']:.{digits}f}")
            lines.append(f"| {kind} | {view} | " + " | ".join(cells) + " |")
    for pair, views in document["paired"].items():
        lines += ["", f"Paired difference {pair.replace('-', ' − ')}, per seed, mean and 95% interval:", "",
                  "| view | metric | per seed | mean | 95% interval |", "|---|---|---|---:|---|"]
        for view, by_metric in views.items():
            for metric, entry in by_metric.items():
                digits = 3 if metric == "auc" else 1
                low, high = entry["ci95"]
                interval = "—" if low is None else f"{low:+.{digits}f} to {high:+.{digits}f}"
                lines.append(f"| {view} | {METRIC_NAMES[metric]} | "
                             + ", ".join(f"{value:+.{digits}f}" for value in entry["per_seed"])
                             + f" | {entry['mean']:+.{digits}f} | {interval} |")
    lines += ["", "**Conclusion.** " + document["conclusion"], ""]
    if diagnostics:
        lines += ["## The cross-view terms", ""]
        for name, entry in diagnostics.items():
            lines.append(f"- {name}: " + entry)
        lines.append("")
    return "\n".join(lines)


def write_evidence(seeds: list[int], runs: list[SeedRun], json_path, markdown_path, dataset: dict,
                   views_dir=None, manifest=None, logs: list[str | os.PathLike] = (),
                   memory_mb: float = DEFAULT_MEMORY_MB) -> dict:
    """The evidence document of ``runs`` (one per seed of ``seeds``), written as JSON and
    Markdown. With ``views_dir`` and ``manifest``, the gradients of the loss terms on the rgb
    encoder at CoCon's start (the CPC encoders) and end are measured too."""
    per_seed = [seed_metrics(run, memory_mb) for run in runs]
    any_features = FeatureSet.load(next(iter(runs[0].features.values())))
    document = summarize(seeds, per_seed, int(any_features.role("test").sum()), wall_seconds(logs))
    lambda_, alpha = dataset["pretrain"]["lambda"], dataset["pretrain"]["alpha"]
    diagnostics = {}
    if views_dir and manifest:
        for seed, run in zip(seeds, runs):
            if not (run.joint and {"rgb", "flow"} <= set(run.cpc)):
                continue
            stages = {"CoCon's start (the CPC encoders)": {view: load_pretrained(path)[0] for view, path in run.cpc.items()},
                      "CoCon's end": {view: load_pretrained(run.joint, view)[0] for view in run.cpc}}
            for stage, models in stages.items():
                gradients = cross_view_gradients(models, dataset, views_dir, manifest)
                document.setdefault("gradients", {})[f"seed {seed}, {stage}"] = gradients
                diagnostics[f"gradient on the rgb encoder, seed {seed}, {stage}"] = (
                    ", ".join(f"{name} {norm:.3g}" for name, norm in gradients["gradient_norm"].items())
                    + f" (norms, as weighted in the loss); cosine of rgb's Lcpc gradient with the cross-view terms' "
                      f"{gradients['cosine_cpc_rgb_vs_cross_view']:+.3f}")
    for seed, run in zip(seeds, runs):
        for init, path in run.runs.items():
            terms = loss_terms(path, lambda_, alpha)
            name = f"{init_kind(init)}, seed {seed}"
            document.setdefault("loss_terms", {})[name] = terms
            first, last = terms["cross_view_share"]
            diagnostics[name] = (
                f"{terms['epochs']} epochs; first and last epoch: "
                + ", ".join(f"{term} {terms['first'][term]:.4g} → {terms['last'].get(term, float('nan')):.4g}"
                            for term in terms["first"])
                + f"; the cross-view terms are {100 * first:.0f}% then {100 * last:.0f}% of the loss")
    for path, text in ((json_path, json.dumps(document, indent=1) + "\n"),
                       (markdown_path, evidence_markdown(document, diagnostics))):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)
    return document
