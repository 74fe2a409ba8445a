"""Nearest-neighbour video retrieval on frozen video features (DESIGN.md section 7).

The protocol of DPC's successors (CoCLR ``test_retrieval``): every test video queries the
train videos (here train + val: the fine-tuning validation part is carved from the
official train list); the query and gallery features are each centred by their own mean
and L2-normalised, ranked by cosine similarity, and R@k is the share of queries with a
same-class video among the k most similar. A joint initialisation with several views is
also scored "fused": the views' cosine matrices summed, so each view votes equally.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from cocon.analysis.features import FeatureSet
from cocon.analysis.pairs import DEFAULT_MEMORY_MB, chunk_rows
from cocon.experiments import VIEW_ORDER
from cocon.train.evaluate import init_order

DEFAULT_KS = (1, 5, 10, 20, 50)
QUERY_ROLES = ("test",)
GALLERY_ROLES = ("train", "val")
FUSED = "fused"
PROTOCOL = ("Test videos query the train (+ val) videos; query and gallery features are each mean-centred by "
            "their own mean, L2-normalised and ranked by cosine similarity; R@k = share of queries with a "
            "same-class video among the k nearest. Fused = the views' cosine similarities summed.")


def normalized(features: np.ndarray) -> np.ndarray:
    """``features`` ``[N, D]`` centred by their own mean and L2-normalised per row ``[N, D]``:
    without centring, an offset common to all features (e.g. of a ReLU or tanh output)
    makes every cosine similarity close to 1."""
    assert features.ndim == 2, features.shape
    centred = features - features.mean(axis=0, keepdims=True)
    return centred / (np.linalg.norm(centred, axis=1, keepdims=True) + 1e-8)


def ranking(similarity: np.ndarray) -> np.ndarray:
    """Gallery indices ``[Q, G]`` per query, most similar first; ties keep the lower index first."""
    return np.argsort(-similarity, axis=1, kind="stable")


def first_match_ranks(similarity: np.ndarray, query_labels: np.ndarray, gallery_labels: np.ndarray) -> np.ndarray:
    """Per query (row of ``similarity`` ``[Q, G]``), the rank in ``ranking`` order of its first
    same-class gallery item, G where there is none ``[Q]``. Counted without sorting (the items
    more similar than the best same-class one, and its ties of lower index), so that a chunk
    of queries against a Kinetics-size gallery needs no [Q, G] index array."""
    queries, gallery = similarity.shape
    assert query_labels.shape == (queries,) and gallery_labels.shape == (gallery,), \
        (similarity.shape, query_labels.shape, gallery_labels.shape)
    same = gallery_labels[None, :] == query_labels[:, None]  # [Q, G]
    same_class = np.where(same, similarity, -np.inf)
    best_index = same_class.argmax(axis=1)  # the lowest index among equal maxima, as the stable ranking has it
    best = same_class[np.arange(queries), best_index][:, None]
    ahead = (similarity > best) | ((similarity == best) & (np.arange(gallery)[None, :] < best_index[:, None]))
    return np.where(same.any(axis=1), ahead.sum(axis=1), gallery)


def recall_from_ranks(ranks: np.ndarray, gallery: int, ks=DEFAULT_KS) -> dict[int, float | None]:
    """R@k from first_match_ranks; None where k exceeds the gallery size (R@k would be undefined, not 1)."""
    return {int(k): (float(np.mean(ranks < k)) if k <= gallery else None) for k in ks}


def recall_at_k(similarity: np.ndarray, query_labels: np.ndarray, gallery_labels: np.ndarray,
                ks=DEFAULT_KS) -> dict[int, float | None]:
    """R@k for each k of ``ks``: the share of queries (rows of ``similarity`` ``[Q, G]``) with
    at least one gallery item of their label among their k most similar; None where k
    exceeds the gallery size G."""
    return recall_from_ranks(first_match_ranks(similarity, query_labels, gallery_labels), similarity.shape[1], ks)


def _split_roles(features: FeatureSet) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks ``[V]`` of the queries and of the gallery; an error names the (init, view)
    that lacks either."""
    queries, gallery = features.role(*QUERY_ROLES), features.role(*GALLERY_ROLES)
    if not queries.any():
        raise ValueError(f"({features.init}, {features.view}): no test video to query with")
    if not gallery.any():
        raise ValueError(f"({features.init}, {features.view}): no train video for the retrieval gallery")
    return queries, gallery


def _check_same_videos(init: str, feature_sets: list[FeatureSet]) -> None:
    first = feature_sets[0]
    for other in feature_sets[1:]:
        if not (np.array_equal(first.video_ids, other.video_ids) and np.array_equal(first.roles, other.roles)):
            raise ValueError(f"init {init}: views {first.view} and {other.view} do not have the same videos and "
                             f"roles in the same order, so their similarities cannot be summed")


def normalized_views(feature_sets: list[FeatureSet]) -> tuple[FeatureSet, list[tuple[np.ndarray, np.ndarray]]]:
    """The first of ``feature_sets`` (views of the same videos; for its ids, labels and role
    masks) and, per view, its normalized query ``[Q, D]`` and gallery ``[G, D]`` features."""
    if not feature_sets:
        raise ValueError("no feature set to compare")
    first = feature_sets[0]
    _check_same_videos(first.init, feature_sets)
    queries, gallery = _split_roles(first)
    return first, [(normalized(features.context[queries]), normalized(features.context[gallery]))
                   for features in feature_sets]


def summed_similarities(views: list[tuple[np.ndarray, np.ndarray]], rows) -> np.ndarray:
    """The cosine similarities ``[rows, G]`` of the queries ``rows`` (a slice or indices) to
    the gallery, summed over the normalized ``views`` (normalized_views)."""
    return sum(query[rows] @ gallery.T for query, gallery in views)


def _retrieval_row(init: str, view: str, members: list[FeatureSet], ks, memory_mb: float) -> dict:
    first, views = normalized_views(members)
    queries, gallery = _split_roles(first)
    query_labels, gallery_labels = first.labels[queries], first.labels[gallery]
    # queries scored at once: a chunk's [chunk, G] arrays fit in memory_mb, for a Kinetics-size gallery too
    chunk = chunk_rows(len(gallery_labels), memory_mb)
    ranks = [first_match_ranks(summed_similarities(views, slice(start, start + chunk)),
                               query_labels[start:start + chunk], gallery_labels)
             for start in range(0, len(query_labels), chunk)]
    recall = recall_from_ranks(np.concatenate(ranks), len(gallery_labels), ks)
    return {"init": init, "view": view, "recall": {str(k): value for k, value in recall.items()},
            "num_queries": len(query_labels), "num_gallery": len(gallery_labels)}


def retrieval_document(feature_sets: dict[tuple[str, str], FeatureSet], ks=DEFAULT_KS,
                       memory_mb: float = DEFAULT_MEMORY_MB) -> dict:
    """R@k of every (init, view) of ``feature_sets``, in the given order, and after each init's
    last view one "fused" row for each init with two or more views.

    Returns ``{"ks": [...], "protocol": str, "rows": [{"init", "view", "recall": {"1": R@1, ...},
    "num_queries", "num_gallery"}]}`` (recall values in [0, 1], None for k > gallery)."""
    views_by_init: dict[str, list[FeatureSet]] = {}
    for (init, view), features in feature_sets.items():
        views_by_init.setdefault(init, []).append(features)
    last_view = {init: members[-1].view for init, members in views_by_init.items()}
    rows = []
    for (init, view), features in feature_sets.items():
        rows.append(_retrieval_row(init, view, [features], ks, memory_mb))
        if view == last_view[init] and len(views_by_init[init]) > 1:
            rows.append(_retrieval_row(init, FUSED, views_by_init[init], ks, memory_mb))
    return {"ks": [int(k) for k in ks], "protocol": PROTOCOL, "rows": rows}


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def retrieval_markdown(document: dict) -> str:
    """``document`` (retrieval_document) as a Markdown table of R@k in percent."""
    ks = document["ks"]
    lines = [f"Retrieval, R@k (%). {document['protocol']}", "",
             "| init | view | " + " | ".join(f"R@{k}" for k in ks) + " |",
             "|---|---|" + "---:|" * len(ks)]
    for row in document["rows"]:
        cells = " | ".join(_percent(row["recall"][str(k)]) for k in ks)
        lines.append(f"| {row['init']} | {row['view']} | {cells} |")
    return "\n".join(lines) + "\n"


def load_feature_sets(paths: list[str | os.PathLike]) -> dict[tuple[str, str], FeatureSet]:
    """The FeatureSets of ``paths`` keyed by their (init, view), in the order of the results
    tables: random, CPC, the joint methods (fewer views first), each in the view order."""
    feature_sets: dict[tuple[str, str], FeatureSet] = {}
    for path in paths:
        features = FeatureSet.load(path)
        key = (features.init, features.view)
        if key in feature_sets:
            raise ValueError(f"{path}: a second features file of ({features.init}, {features.view})")
        feature_sets[key] = features
    return dict(sorted(feature_sets.items(), key=lambda item: (init_order(item[0][0]), VIEW_ORDER.index(item[0][1]))))


def write_document(document: dict, markdown: str, json_path: str | os.PathLike,
                   markdown_path: str | os.PathLike) -> None:
    """Write an analysis ``document`` as JSON and its ``markdown`` table."""
    for path, text in ((json_path, json.dumps(document, indent=1) + "\n"), (markdown_path, markdown)):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)


def write_retrieval(feature_paths: list[str | os.PathLike], ks, json_path: str | os.PathLike,
                    markdown_path: str | os.PathLike, memory_mb: float = DEFAULT_MEMORY_MB) -> dict:
    """retrieval_document of the features files ``feature_paths``, written as JSON and Markdown."""
    document = retrieval_document(load_feature_sets(feature_paths), ks, memory_mb)
    write_document(document, retrieval_markdown(document), json_path, markdown_path)
    return document


def nearest_neighbours(feature_sets: list[FeatureSet], k: int, queries: list[str] | None = None,
                       memory_mb: float = DEFAULT_MEMORY_MB) -> list[dict]:
    """The k most similar gallery (train + val) videos of each test video, by the retrieval
    protocol's cosine similarity summed over ``feature_sets`` (one FeatureSet, or several
    views of the same videos).

    ``queries``: the test video ids to answer, in that order (default: every test video).
    Returns one dict per query: ``{"query": id, "query_label": int, "neighbours": [{"video_id":
    id, "label": int, "similarity": float}, ...]}``, most similar first (ties: lower gallery
    index first), at most k neighbours."""
    if k < 1:
        raise ValueError(f"k = {k}: at least one neighbour is needed")
    first, views = normalized_views(feature_sets)
    query_mask, gallery_mask = _split_roles(first)
    query_ids, query_labels = first.video_ids[query_mask], first.labels[query_mask]
    gallery_ids, gallery_labels = first.video_ids[gallery_mask], first.labels[gallery_mask]
    position = {str(video_id): index for index, video_id in enumerate(query_ids)}
    if queries is None:
        chosen = list(range(len(query_ids)))
    else:
        unknown = [video_id for video_id in queries if video_id not in position]
        if unknown:
            raise ValueError(f"({first.init}, {first.view}): {unknown} are not test videos")
        chosen = [position[video_id] for video_id in queries]
    rows = []
    chunk = chunk_rows(len(gallery_ids), memory_mb)
    for start in range(0, len(chosen), chunk):
        asked = chosen[start:start + chunk]
        similarity = summed_similarities(views, asked)  # [len(asked), G]: only the queries asked for
        order = ranking(similarity)[:, :k]  # [len(asked), min(k, G)]
        rows += [{"query": str(query_ids[index]), "query_label": int(query_labels[index]),
                  "neighbours": [{"video_id": str(gallery_ids[item]), "label": int(gallery_labels[item]),
                                  "similarity": float(row[item])} for item in ranked]}
                 for index, row, ranked in zip(asked, similarity, order)]
    return rows
