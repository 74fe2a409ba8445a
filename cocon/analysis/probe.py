"""Linear probe on frozen video features (DESIGN.md section 7): how linearly separable the
classes are in an encoder's context features, without fine-tuning it.

A multinomial logistic regression (scikit-learn, lbfgs) on standardised features: C is
chosen by stratified k-fold cross-validation over the train + val videos (k = 5, or the
smallest class's count of videos if that is less), then the probe is refitted on them all
with that C and scored on the test videos. Cross-validation rather than the val part alone:
that part is a tenth of the train split, two videos per class on the evidence benchmark,
where one video moves val top-1 by 5 points and the chosen C by up to 8 points of test top-1.
"""
from __future__ import annotations

import os

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from cocon.analysis.features import FeatureSet
from cocon.analysis.retrieval import load_feature_sets, write_document

DEFAULT_CS = (0.01, 0.1, 1.0, 10.0)
DEFAULT_C = 1.0
MAX_ITER = 5000
FOLDS = 5
TOP_K = 5


def _probe(c: float, seed: int) -> Pipeline:
    # lbfgs fits the multinomial (softmax) loss whenever there are 3+ classes.
    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=MAX_ITER, random_state=seed))


def _fit(features: np.ndarray, labels: np.ndarray, c: float, seed: int) -> Pipeline:
    return _probe(c, seed).fit(features, labels)


def top_k_accuracy(probe: Pipeline, features: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Share of ``labels`` ``[N]`` among the probe's k most probable classes for ``features``
    ``[N, D]``. The columns of predict_proba are the classes seen in training
    (``classes_``), so a label the probe never saw always counts as a miss."""
    probabilities = probe.predict_proba(features)  # [N, classes seen]
    ranked = probe.classes_[np.argsort(-probabilities, axis=1, kind="stable")[:, :k]]  # [N, k]
    return float(np.mean((ranked == labels[:, None]).any(axis=1)))


def cross_validated_top1(features: np.ndarray, labels: np.ndarray, cs, folds: int, seed: int) -> dict[str, float]:
    """{str(C): top-1 over ``folds`` stratified folds of ``features`` ``[N, D]``}: each fold
    predicted by a probe fitted on the others; the folds are drawn with ``seed``."""
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return {str(c): float(np.mean(cross_val_predict(_probe(c, seed), features, labels, cv=splitter) == labels))
            for c in cs}


def at_grid_edge(cv_top1_by_c: dict[str, float], chosen: float) -> bool:
    """Whether ``chosen`` is the smallest or largest C of a grid of two or more and
    cross-validated strictly better than its one neighbour: the best C may then lie beyond
    the grid (a tie with the neighbour says nothing of what is beyond)."""
    grid = sorted(float(c) for c in cv_top1_by_c)
    if len(grid) < 2 or float(chosen) not in (grid[0], grid[-1]):
        return False
    by_value = {float(c): top1 for c, top1 in cv_top1_by_c.items()}
    neighbour = grid[1] if float(chosen) == grid[0] else grid[-2]
    return by_value[float(chosen)] > by_value[neighbour]


def linear_probe(fs: FeatureSet, cs=DEFAULT_CS, seed: int = 0) -> dict:
    """Probe ``fs.context`` (see the module docstring).

    Returns ``{"top1", "top5", "C", "C_selected_on": "cross-validation" | "default",
    "C_at_grid_edge", "folds", "cv_top1", "cv_top1_by_C": {str(C): top-1}, "num_train",
    "num_val", "num_test", "num_classes_seen"}``: accuracies in [0, 1] on the test videos;
    top5 is None when the probe knows 5 classes or fewer, where every label is among the top
    5 and it could not miss. ``C_at_grid_edge`` (at_grid_edge): a wider grid
    (``analysis.probe_cs``) might choose another C. Where a class has a single train + val
    video no fold could hold it out: C is then 1.0, folds 0 and cv_top1 None."""
    name = f"({fs.init}, {fs.view})"
    train, val, test = fs.role("train"), fs.role("val"), fs.role("test")
    if not test.any():
        raise ValueError(f"{name}: no test video to score the linear probe on")
    fitted = train | val
    features, labels = fs.context[fitted], fs.labels[fitted]
    present = np.unique(labels)
    if len(present) < 2:
        raise ValueError(f"{name}: the linear probe needs train videos of at least two classes, found {len(present)}")
    if not cs:
        raise ValueError(f"{name}: no value of C to try")
    folds = min(FOLDS, int(min(np.sum(labels == label) for label in present)))
    if folds >= 2:
        cv_top1_by_c = cross_validated_top1(features, labels, cs, folds, seed)
        # max() keeps the first of equal accuracies: the smallest C when cs is ascending.
        chosen = max(cs, key=lambda c: cv_top1_by_c[str(c)])
        selected_on = "cross-validation"
    else:
        cv_top1_by_c, chosen, selected_on, folds = {}, DEFAULT_C, "default", 0
    probe = _fit(features, labels, chosen, seed)
    informative = len(probe.classes_) > TOP_K
    return {"top1": top_k_accuracy(probe, fs.context[test], fs.labels[test], 1),
            "top5": top_k_accuracy(probe, fs.context[test], fs.labels[test], TOP_K) if informative else None,
            "C": float(chosen), "C_selected_on": selected_on, "C_at_grid_edge": at_grid_edge(cv_top1_by_c, chosen),
            "folds": folds,
            "cv_top1": cv_top1_by_c[str(chosen)] if cv_top1_by_c else None, "cv_top1_by_C": cv_top1_by_c,
            "num_train": int(train.sum()), "num_val": int(val.sum()), "num_test": int(test.sum()),
            "num_classes_seen": int(len(probe.classes_))}


def top1_at_every_c(fs: FeatureSet, cs=DEFAULT_CS, seed: int = 0) -> dict[str, float]:
    """{str(C): test top-1 in [0, 1]} of the probe fitted on the train + val videos at each C.
    A diagnosis of how much the choice of C moves the result (bench.probe_c,
    bench.random_spread); linear_probe never looks at the test videos to choose C."""
    fitted, test = fs.role("train", "val"), fs.role("test")
    return {str(c): float(np.mean(_fit(fs.context[fitted], fs.labels[fitted], c, seed).predict(fs.context[test])
                                  == fs.labels[test]))
            for c in cs}


def probe_document(feature_sets: dict[tuple[str, str], FeatureSet], cs=DEFAULT_CS, seed: int = 0) -> dict:
    """The linear probe of every (init, view) of ``feature_sets``, in the given order:
    ``{"cs": [...], "seed": int, "rows": [{"init", "view", **linear_probe(...)}]}``."""
    rows = [{"init": init, "view": view, **linear_probe(features, cs, seed)}
            for (init, view), features in feature_sets.items()]
    return {"cs": [float(c) for c in cs], "seed": seed, "rows": rows}


def probe_markdown(document: dict) -> str:
    """``document`` (probe_document) as a Markdown table, accuracies in percent."""
    lines = ["Linear probe (logistic regression on standardised frozen context features; C chosen among "
             + ", ".join(f"{c:g}" for c in document["cs"]) + " by the top-1 of stratified k-fold cross-validation "
             "over the train + val videos, then refitted on them all).", "",
             "| init | view | C | CV top-1 (folds) | top-1 | top-5 | train + val | test |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for row in document["rows"]:
        c = f"{row['C']:g}" + ("" if row["C_selected_on"] == "cross-validation" else " (default)") + (
            " (grid edge)" if row["C_at_grid_edge"] else "")
        cv = "—" if row["cv_top1"] is None else f"{100 * row['cv_top1']:.1f} ({row['folds']})"
        top5 = "—" if row["top5"] is None else f"{100 * row['top5']:.1f}"
        lines.append(f"| {row['init']} | {row['view']} | {c} | {cv} | {100 * row['top1']:.1f} | {top5} | "
                     f"{row['num_train'] + row['num_val']} | {row['num_test']} |")
    edges = sum(row["C_at_grid_edge"] for row in document["rows"])
    if edges:
        lines += ["", f"Grid edge ({edges} of {len(document['rows'])} probes): cross-validation preferred the "
                      "grid's smallest or largest C to its neighbour, so the best C may lie beyond the grid; "
                      "widen it with `analysis.probe_cs`."]
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
