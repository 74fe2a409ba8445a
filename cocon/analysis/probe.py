"""Linear probe on frozen video features (DESIGN.md section 7): how linearly separable the
classes are in an encoder's context features, without fine-tuning it.

A multinomial logistic regression (scikit-learn, lbfgs) on standardised features: C is
chosen by top-1 on the val videos after fitting on the train videos, then the probe is
refitted on train + val with that C and scored on the test videos.
"""
from __future__ import annotations

import os

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from cocon.analysis.features import FeatureSet
from cocon.analysis.retrieval import load_feature_sets, write_document

DEFAULT_CS = (0.01, 0.1, 1.0, 10.0)
DEFAULT_C = 1.0
MAX_ITER = 5000
TOP_K = 5


def _fit(features: np.ndarray, labels: np.ndarray, c: float, seed: int) -> Pipeline:
    # lbfgs fits the multinomial (softmax) loss whenever there are 3+ classes.
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=MAX_ITER, random_state=seed))
    return probe.fit(features, labels)


def top_k_accuracy(probe: Pipeline, features: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Share of ``labels`` ``[N]`` among the probe's k most probable classes for ``features``
    ``[N, D]``. The columns of predict_proba are the classes seen in training
    (``classes_``), so a label the probe never saw always counts as a miss."""
    probabilities = probe.predict_proba(features)  # [N, classes seen]
    ranked = probe.classes_[np.argsort(-probabilities, axis=1, kind="stable")[:, :k]]  # [N, k]
    return float(np.mean((ranked == labels[:, None]).any(axis=1)))


def linear_probe(fs: FeatureSet, cs=DEFAULT_CS, seed: int = 0) -> dict:
    """Probe ``fs.context`` (see the module docstring).

    Returns ``{"top1", "top5", "C", "C_selected_on": "val" | "default", "val_top1",
    "val_top1_by_C": {str(C): top-1}, "num_train", "num_val", "num_test", "num_classes_seen"}``:
    accuracies in [0, 1] on the test videos; top5 is None when the probe knows 5 classes or
    fewer, where every label is among the top 5 and it could not miss; without val videos (or
    with a train part of one class) C is 1.0 and val_top1 None."""
    name = f"({fs.init}, {fs.view})"
    train, val, test = fs.role("train"), fs.role("val"), fs.role("test")
    if not test.any():
        raise ValueError(f"{name}: no test video to score the linear probe on")
    fitted = train | val
    if len(np.unique(fs.labels[fitted])) < 2:
        raise ValueError(f"{name}: the linear probe needs train videos of at least two classes, "
                         f"found {len(np.unique(fs.labels[fitted]))}")
    if not cs:
        raise ValueError(f"{name}: no value of C to try")
    val_top1_by_c: dict[str, float] = {}
    # choosing C needs validation videos and a train part (without them) of two classes or more
    if val.any() and len(np.unique(fs.labels[train])) >= 2:
        for c in cs:
            probe = _fit(fs.context[train], fs.labels[train], c, seed)
            val_top1_by_c[str(c)] = float(np.mean(probe.predict(fs.context[val]) == fs.labels[val]))
        # max() keeps the first of equal accuracies: the smallest C when cs is ascending.
        chosen = max(cs, key=lambda c: val_top1_by_c[str(c)])
        selected_on = "val"
    else:
        chosen, selected_on = DEFAULT_C, "default"
    probe = _fit(fs.context[fitted], fs.labels[fitted], chosen, seed)
    informative = len(probe.classes_) > TOP_K
    return {"top1": top_k_accuracy(probe, fs.context[test], fs.labels[test], 1),
            "top5": top_k_accuracy(probe, fs.context[test], fs.labels[test], TOP_K) if informative else None,
            "C": float(chosen), "C_selected_on": selected_on,
            "val_top1": val_top1_by_c[str(chosen)] if val_top1_by_c else None, "val_top1_by_C": val_top1_by_c,
            "num_train": int(train.sum()), "num_val": int(val.sum()), "num_test": int(test.sum()),
            "num_classes_seen": int(len(probe.classes_))}


def probe_document(feature_sets: dict[tuple[str, str], FeatureSet], cs=DEFAULT_CS, seed: int = 0) -> dict:
    """The linear probe of every (init, view) of ``feature_sets``, in the given order:
    ``{"cs": [...], "seed": int, "rows": [{"init", "view", **linear_probe(...)}]}``."""
    rows = [{"init": init, "view": view, **linear_probe(features, cs, seed)}
            for (init, view), features in feature_sets.items()]
    return {"cs": [float(c) for c in cs], "seed": seed, "rows": rows}


def probe_markdown(document: dict) -> str:
    """``document`` (probe_document) as a Markdown table, accuracies in percent."""
    lines = ["Linear probe (logistic regression on standardised frozen context features; C chosen by val "
             "top-1 among " + ", ".join(f"{c:g}" for c in document["cs"]) + ", refitted on train + val).", "",
             "| init | view | C | val top-1 | top-1 | top-5 | train + val | test |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for row in document["rows"]:
        c = f"{row['C']:g}" + ("" if row["C_selected_on"] == "val" else " (default)")
        val = "—" if row["val_top1"] is None else f"{100 * row['val_top1']:.1f}"
        top5 = "—" if row["top5"] is None else f"{100 * row['top5']:.1f}"
        lines.append(f"| {row['init']} | {row['view']} | {c} | {val} | {100 * row['top1']:.1f} | {top5} | "
                     f"{row['num_train'] + row['num_val']} | {row['num_test']} |")
    if any(row["top5"] is None for row in document["rows"]):
        lines += ["", f"Top-5 is left out (—) where the probe knows {TOP_K} classes or fewer: every label is then "
                      "among its top 5, so it cannot miss."]
    return "\n".join(lines) + "\n"


def write_probe(feature_paths: list[str | os.PathLike], cs, seed: int, json_path: str | os.PathLike,
                markdown_path: str | os.PathLike, threads: int | None = None) -> dict:
    """probe_document of the features files ``feature_paths``, written as JSON and Markdown;
    ``threads`` caps the BLAS/OpenMP threads the fits use (None: the libraries' default)."""
    with threadpool_limits(limits=threads):
        document = probe_document(load_feature_sets(feature_paths), cs, seed)
    write_document(document, probe_markdown(document), json_path, markdown_path)
    return document
