"""Nearest consistent classes across views (the paper's Tables 4/7 and appendix B.2).

Each class is represented per view by the mean of its videos' features; its k nearest
other classes by cosine similarity are found per view, and its consistent neighbours are
the classes among the k nearest in EVERY view. Views that share no pixels (RGB, flow,
pose, segmentation) can only agree on a class's neighbours through what the videos show
happening, which the paper reads as semantic structure: CoCon should have many more
consistent neighbours than CPC trained on the same views independently.
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics.pairwise import cosine_similarity

from cocon.analysis.features import FeatureSet
from cocon.analysis.pairs import VARIANTS
from cocon.analysis.retrieval import normalized


def class_means(fs: FeatureSet, roles=("test",), variant: str = "raw") -> tuple[np.ndarray, np.ndarray]:
    """The labels ``[C]`` (sorted) of the classes with videos in ``roles`` and their mean
    feature ``[C, D]``. ``raw``: the mean of the features as they are, whose cosines the paper
    compares; ``centred``: the mean after the features are centred over those videos and
    L2-normalised, as retrieval compares them (an offset common to every feature otherwise
    makes all class means nearly parallel)."""
    mask = fs.role(*roles)
    if not mask.any():
        raise ValueError(f"({fs.init}, {fs.view}): no video with role {' or '.join(roles)}")
    if variant == "raw":
        features = fs.context[mask].astype(np.float64)
    elif variant == "centred":
        features = normalized(fs.context[mask])
    else:
        raise ValueError(f"unknown cosine variant {variant!r}; expected one of {VARIANTS}")
    labels = fs.labels[mask]
    present = np.unique(labels)
    means = np.stack([features[labels == label].mean(axis=0) for label in present])
    return present, means


def nearest_classes(means: np.ndarray, k: int) -> np.ndarray:
    """Row indices ``[C, k]`` of the k classes most cosine-similar to each class of ``means``
    ``[C, D]``, itself excluded, most similar first (ties: lower index first)."""
    count = means.shape[0]
    if not 1 <= k < count:
        raise ValueError(f"k = {k} nearest classes need between 1 and {count - 1} other classes; there are {count}")
    similarity = cosine_similarity(means)  # [C, C]
    np.fill_diagonal(similarity, -np.inf)
    return np.argsort(-similarity, axis=1, kind="stable")[:, :k]


def class_consistency(means_by_view: dict[str, np.ndarray], labels: np.ndarray, k: int = 4) -> dict:
    """Consistent nearest classes of ``means_by_view`` (view -> class means ``[C, D]``, rows in
    the order of the shared ``labels`` ``[C]``).

    Returns ``{"k", "views", "per_class": {label: [consistent neighbour labels, in the first
    view's order]}, "at_least": {m: classes with >= m consistent neighbours, m = 1..k},
    "fully_consistent": classes with all k}``."""
    if not means_by_view:
        raise ValueError("class consistency needs at least one view")
    for view, means in means_by_view.items():
        if means.shape[0] != len(labels):
            raise ValueError(f"view {view}: {means.shape[0]} class means for {len(labels)} labels")
    neighbours = {view: nearest_classes(means, k) for view, means in means_by_view.items()}  # view -> [C, k]
    first, *others = neighbours.values()
    per_class = {}
    for row, label in enumerate(labels):
        agreed = [index for index in first[row] if all(index in other[row] for other in others)]
        per_class[int(label)] = [int(labels[index]) for index in agreed]
    counts = np.array([len(agreed) for agreed in per_class.values()])
    return {"k": k, "views": list(means_by_view), "per_class": per_class,
            "at_least": {m: int(np.sum(counts >= m)) for m in range(1, k + 1)},
            "fully_consistent": int(np.sum(counts == k))}


def _named(consistency: dict, class_names: list[str]) -> dict:
    """``consistency`` with class names for labels and string keys (for JSON)."""
    return {"at_least": {str(m): count for m, count in consistency["at_least"].items()},
            "fully_consistent": consistency["fully_consistent"],
            "per_class": {class_names[label]: [class_names[other] for other in agreed]
                          for label, agreed in consistency["per_class"].items()}}


def consistency_document(cpc: dict[str, FeatureSet], joint: dict[str, dict[str, FeatureSet]],
                         class_names: list[str], k: int = 4, variants=("raw",)) -> dict:
    """For each joint initialisation of ``joint`` (name -> view -> FeatureSet), the class
    consistency of its views beside that of the CPC encoders of the same views (``cpc``:
    view -> FeatureSet), both on the classes with test videos in every one of those
    FeatureSets, for each class-mean variant of ``variants`` (class_means).

    Returns ``{"k", "variants": [...], "inits": [{"init", "views", "num_classes", <variant>:
    {"joint": {...}, "cpc": {...}}, ...}]}``, each side ``{"at_least": {"1": count, ...},
    "fully_consistent", "per_class": {class name: [consistent class names]}}``."""
    if not variants:
        raise ValueError("class consistency needs at least one class-mean variant")
    inits = []
    for init, views in joint.items():
        missing = [view for view in views if view not in cpc]
        if missing:
            raise ValueError(f"joint init {init}: no CPC features of view(s) {missing} to compare with")
        sides = {"joint": views, "cpc": {view: cpc[view] for view in views}}
        shared = sorted(set.intersection(*(set(np.unique(features.labels[features.role("test")]).tolist())
                                           for sets in sides.values() for features in sets.values())))
        shared = np.array(shared, dtype=int)
        entry = {"init": init, "views": list(views), "num_classes": len(shared)}
        for variant in variants:
            entry[variant] = {}
            for side, sets in sides.items():
                restricted = {}
                for view, features in sets.items():
                    labels, means = class_means(features, variant=variant)
                    restricted[view] = means[np.isin(labels, shared)]
                entry[variant][side] = _named(class_consistency(restricted, shared, k), class_names)
        inits.append(entry)
    return {"k": k, "variants": list(variants), "inits": inits}


def consistency_markdown(document: dict) -> str:
    """``document`` (consistency_document): per joint init, how many classes have at least m
    consistent nearest classes (CPC vs the joint init), and the consistent nearest classes
    of every class where either has one (the paper's Table 4); with two class-mean variants,
    their columns side by side, each labelled."""
    k, variants = document["k"], document["variants"]
    described = {"raw": "the mean of the raw features (the paper's)",
                 "centred": "the mean of the features centred over the test videos and L2-normalised"}
    lines = ["Class means: " + "; and, labelled centred, ".join(described[variant] for variant in variants)
             + ". Classes are compared by the cosine of their means; a consistent neighbour is among the k nearest "
               "classes in every view.", ""]
    tag = (lambda variant: f", {variant}") if len(variants) > 1 else (lambda variant: "")
    for entry in document["inits"]:
        init = entry["init"]
        lines += [f"### {init} ({', '.join(entry['views'])}): consistent nearest classes, k = {k}, "
                  f"{entry['num_classes']} classes", "",
                  f"| consistent neighbours (of {k}) | "
                  + " | ".join(f"CPC{tag(variant)} | {init}{tag(variant)}" for variant in variants) + " |",
                  "|---|" + "---:|---:|" * len(variants)]
        lines += [f"| at least {m} | " + " | ".join(
            f"{entry[variant]['cpc']['at_least'][str(m)]} | {entry[variant]['joint']['at_least'][str(m)]}"
            for variant in variants) + " |" for m in range(1, k + 1)]
        lines += ["", "| class | " + " | ".join(f"{init}{tag(variant)} | CPC{tag(variant)}" for variant in variants)
                  + " |", "|---|" + "---|---|" * len(variants)]
        for name in entry[variants[0]]["joint"]["per_class"]:
            cells = [(entry[variant]["joint"]["per_class"][name], entry[variant]["cpc"]["per_class"][name])
                     for variant in variants]
            if any(joint_agreed or cpc_agreed for joint_agreed, cpc_agreed in cells):
                lines.append(f"| {name} | " + " | ".join(f"{', '.join(joint_agreed) or 'N/A'} | "
                                                         f"{', '.join(cpc_agreed) or 'N/A'}"
                                                         for joint_agreed, cpc_agreed in cells) + " |")
        lines.append("")
    return "\n".join(lines)
