"""The paper's figures (DESIGN.md section 7): t-SNE of video features (Fig. 3/8), per-class
gains (Fig. 4), soft alignment (Fig. 5/9), cosine-similarity histograms (Fig. 10),
nearest neighbours (Fig. 11), and the training curves.

Every figure function writes a PNG and, beside it, the data it plots (CSV or JSON, so a
number in a figure can be checked without reading pixels), and returns a small summary.
Figures are ``matplotlib.figure.Figure`` objects, never pyplot's global state, so they
need no backend switch and are freed when they go out of scope.
"""
from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from scipy.ndimage import gaussian_filter
from sklearn.manifold import TSNE

from cocon.analysis.features import FeatureSet
from cocon.analysis.pairs import DEFAULT_MEMORY_MB, pair_histogram, variant_label
from cocon.analysis.retrieval import normalized

DPI = 100
# One colour family per group of classes, as the paper's Fig. 3 (red: instruments, ...).
GROUP_COLORMAPS = ("Reds", "Blues", "Greens", "Purples", "Oranges", "Greys", "YlGn", "PuRd", "BuGn", "GnBu")
# Markers cycled every 20 classes, so that tab20's colours stay distinguishable.
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
QUERY_COLOR = "aqua"


def _figure(figsize: tuple[float, float]) -> Figure:
    # Constrained layout keeps titles, axis labels, colour bars and outside legends apart.
    return Figure(figsize=figsize, layout="constrained")


def _save(figure: Figure, png: str | os.PathLike) -> None:
    Path(png).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png, dpi=DPI, bbox_inches="tight")


def _write_json(path: str | os.PathLike, data) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data, indent=1) + "\n")


def _write_csv(path: str | os.PathLike, columns: list[str], rows: list[list]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows(rows)


def _legend_columns(entries: int) -> int:
    """Columns of a legend of ``entries``: about 30 entries fit the height of a figure."""
    return max(1, math.ceil(entries / 30))


def _class_styles(classes: list[int], groups: dict[str, list[int]] | None) -> dict[int, dict]:
    """Colour and marker per class: shades of one colormap per group with ``groups``,
    otherwise tab20 with a new marker every 20 classes."""
    if groups:
        styles = {}
        for number, members in enumerate(groups.values()):
            family = colormaps[GROUP_COLORMAPS[number % len(GROUP_COLORMAPS)]]
            for shade, label in zip(np.linspace(0.45, 0.95, len(members)), members):
                styles[label] = {"color": family(shade), "marker": MARKERS[number // len(GROUP_COLORMAPS) % len(MARKERS)]}
        return styles
    palette = colormaps["tab20"]
    return {label: {"color": palette(index % 20), "marker": MARKERS[index // 20 % len(MARKERS)]}
            for index, label in enumerate(classes)}


# t-SNE's perplexity must stay below the number of points; with fewer there is nothing to lay out
TSNE_MIN_VIDEOS = 3


def tsne_figure(panels: dict[str, FeatureSet], class_names: list[str], png, csv_path, classes: list[int] | None = None,
                groups: dict[str, list[int]] | None = None, seed: int = 0, roles=("test",)) -> dict:
    """t-SNE of the normalized context features of ``classes``' videos with ``roles``, one
    panel per entry of ``panels`` (e.g. CPC beside CoCon), side by side.

    ``groups`` (ordered group name -> label indices) colours each group with its own colour
    family (the paper's Fig. 3); ``classes`` defaults to the groups' classes, else every
    class present. Perplexity min(30, (n - 1) / 3) keeps tiny sets valid.
    CSV columns: panel, video_id, label, class, x, y. Returns {panel: number of videos}."""
    if not panels:
        raise ValueError("t-SNE needs at least one panel")
    if classes is None and groups:
        classes = [label for members in groups.values() for label in members]
    if classes is None:
        classes = sorted({int(label) for features in panels.values() for label in features.labels[features.role(*roles)]})
    if groups:
        ungrouped = sorted(set(classes) - {label for members in groups.values() for label in members})
        if ungrouped:
            raise ValueError(f"t-SNE classes {ungrouped} are in no group")
    styles = _class_styles(classes, groups)
    figure = _figure(figsize=(5.5 * len(panels) + 1.6 * _legend_columns(len(classes)), 5.0))
    rows, summary, handles = [], {}, {}
    for number, (panel, features) in enumerate(panels.items()):
        mask = features.role(*roles) & np.isin(features.labels, classes)
        count = int(mask.sum())
        if count < TSNE_MIN_VIDEOS:
            raise ValueError(f"t-SNE panel {panel}: {count} videos of the chosen classes with role "
                             f"{' or '.join(roles)}; at least 3 are needed")
        embedding = TSNE(n_components=2, init="pca", perplexity=min(30.0, (count - 1) / 3), random_state=seed)
        points = embedding.fit_transform(normalized(features.context[mask].astype(np.float64)))  # [n, 2]
        labels, video_ids = features.labels[mask], features.video_ids[mask]
        axes = figure.add_subplot(1, len(panels), number + 1)
        for label in classes:
            here = labels == label
            if here.any():
                handles[label] = axes.scatter(points[here, 0], points[here, 1], s=18, edgecolors="none", **styles[label])
        axes.set_title(f"{panel} ({count} videos)")
        axes.set_xlabel("t-SNE 1")
        axes.set_ylabel("t-SNE 2")
        rows += [[panel, str(video_id), int(label), class_names[label], float(x), float(y)]
                 for video_id, label, (x, y) in zip(video_ids, labels, points)]
        summary[panel] = count
    ordered = [label for label in classes if label in handles]
    group_of = {label: group for group, members in (groups or {}).items() for label in members}
    names = [f"{group_of[label]}: {class_names[label]}" if groups else class_names[label] for label in ordered]
    figure.legend([handles[label] for label in ordered], names, loc="outside right upper",
                  ncols=_legend_columns(len(ordered)),
                  fontsize="small" if len(ordered) <= 30 else "x-small", markerscale=1.2, title="class")
    figure.suptitle("t-SNE of video features")
    _save(figure, png)
    _write_csv(csv_path, ["panel", "video_id", "label", "class", "x", "y"], rows)
    return summary


def similarity_histograms(panels: dict[str, FeatureSet], png, json_path, roles=("test",), bins: int = 50,
                          variants=("raw",), memory_mb: float = DEFAULT_MEMORY_MB) -> dict:
    """Per panel and cosine variant (cocon.analysis.pairs: ``raw``, the paper's Fig. 10, or
    ``centred``), density histograms of the cosine similarities of all pairs of videos with
    ``roles``: same class (blue) vs other class (orange), with the ROC AUC of telling the two
    apart by the cosine in the title (None without both kinds). One row of panels per
    variant, labelled; memory is bounded by ``memory_mb`` whatever the number of pairs.

    JSON: {variant: {panel: {"auc", "auc_error_bound", "same_pairs", "other_pairs", "same_mean",
    "other_mean", "bin_edges", "same_counts", "other_counts"}}} (raw counts).
    Returns {variant: {panel: auc}}."""
    if not panels:
        raise ValueError("similarity histograms need at least one panel")
    if not variants:
        raise ValueError("similarity histograms need at least one cosine variant")
    figure = _figure(figsize=(5.0 * len(panels), 3.8 * len(variants)))
    data, aucs = {}, {}
    for row, variant in enumerate(variants):
        data[variant], aucs[variant] = {}, {}
        for number, (panel, features) in enumerate(panels.items()):
            mask = features.role(*roles)
            if mask.sum() < 2:
                raise ValueError(f"similarity histogram {panel}: {int(mask.sum())} videos with role "
                                 f"{' or '.join(roles)}; at least 2 are needed for a pair")
            pairs = pair_histogram(features.context[mask], features.labels[mask], variant, bins, memory_mb)
            axes = figure.add_subplot(len(variants), len(panels), row * len(panels) + number + 1)
            for counts, color, name in ((pairs.same_counts, "tab:blue", "same class"),
                                        (pairs.other_counts, "tab:orange", "other class")):
                if counts.sum():
                    axes.hist(pairs.edges[:-1], bins=pairs.edges, weights=counts, density=True, alpha=0.6,
                              color=color, label=f"{name} ({int(counts.sum())} pairs)")
            auc = "—" if pairs.auc is None else f"{pairs.auc:.3f}"
            axes.set_title(f"{panel}, {variant_label(variant)}: AUC {auc}", fontsize="medium")
            axes.set_xlabel(f"cosine similarity ({variant})")
            axes.set_ylabel("density")
            axes.legend(fontsize="small")
            data[variant][panel] = {"auc": pairs.auc, "auc_error_bound": pairs.auc_error_bound,
                                    "same_pairs": pairs.same_pairs, "other_pairs": pairs.other_pairs,
                                    "same_mean": pairs.same_mean, "other_mean": pairs.other_mean,
                                    "bin_edges": pairs.edges.tolist(), "same_counts": pairs.same_counts.tolist(),
                                    "other_counts": pairs.other_counts.tolist()}
            aucs[variant][panel] = pairs.auc
    _save(figure, png)
    _write_json(json_path, data)
    return aucs


def per_class_gains(baseline: dict[str, float], improved: dict[str, float], png, csv_path, extremes: int = 10,
                    labels=("CPC", "CoCon")) -> dict:
    """Per-class top-1 gain ``improved - baseline`` (class name -> accuracy) over the classes
    in both, as the paper's Fig. 4: a horizontal bar chart of the ``extremes`` largest losses
    (red) and gains (blue), every class when there are at most 2 * extremes.

    CSV columns: class, baseline, improved, gain (every common class, largest gain first).
    Returns {"classes", "mean_gain", "gains", "losses", "unchanged"} (counts of classes)."""
    common = [name for name in baseline if name in improved]
    if not common:
        raise ValueError("per-class gains: the baseline and the improved accuracies share no class")
    gains = {name: improved[name] - baseline[name] for name in common}
    ranked = sorted(common, key=lambda name: gains[name], reverse=True)
    shown = ranked if len(ranked) <= 2 * extremes else ranked[:extremes] + ranked[-extremes:]
    shown = shown[::-1]  # barh draws bottom up: largest gain on top
    values = np.array([gains[name] for name in shown])
    figure = _figure(figsize=(6.5, max(2.5, 0.28 * len(shown) + 1.2)))
    axes = figure.add_subplot(1, 1, 1)
    colors = np.where(values > 0, "tab:blue", np.where(values < 0, "tab:red", "tab:gray"))
    axes.barh(np.arange(len(shown)), values, color=colors)
    axes.set_yticks(np.arange(len(shown)), shown, fontsize="small")
    axes.axvline(0.0, color="black", linewidth=0.8)
    axes.set_xlabel(f"top-1 gain ({labels[1]} − {labels[0]})")
    subset = "all classes" if len(shown) == len(ranked) else f"the {extremes} largest losses and gains"
    axes.set_title(f"Per-class top-1: {labels[1]} vs {labels[0]}, {subset} of {len(ranked)}")
    _save(figure, png)
    _write_csv(csv_path, ["class", "baseline", "improved", "gain"],
               [[name, baseline[name], improved[name], gains[name]] for name in ranked])
    all_gains = np.array([gains[name] for name in ranked])
    return {"classes": len(ranked), "mean_gain": float(all_gains.mean()), "gains": int((all_gains > 0).sum()),
            "losses": int((all_gains < 0).sum()), "unchanged": int((all_gains == 0).sum())}


def relative_similarities(similarity: np.ndarray) -> np.ndarray:
    """Each row of ``similarity`` ``[R, C]`` rescaled to [0, 1] (minus its minimum, over its
    range): which blocks of the second video match a block of the first best, whatever the
    overall level. A constant row becomes 0."""
    low = similarity.min(axis=1, keepdims=True)
    spread = similarity.max(axis=1, keepdims=True) - low
    return np.divide(similarity - low, spread, out=np.zeros_like(similarity), where=spread > 0)


def block_similarity(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Cosine similarities ``[B1, B2]`` of block features ``[B1, D]`` and ``[B2, D]``."""
    def unit(blocks):
        return blocks / (np.linalg.norm(blocks, axis=1, keepdims=True) + 1e-8)
    return unit(first.astype(np.float64)) @ unit(second.astype(np.float64)).T


def alignment_heatmaps(fs: FeatureSet, pairs: list[tuple[str, str]], class_names: list[str], png, json_path,
                       sigma: float = 1.0) -> dict:
    """Soft alignment of pairs of test videos (the paper's Fig. 5/9): per pair, the cosine
    similarity of their 18 block features (rows: blocks of the first video, columns: of the
    second), relative per row (relative_similarities), smoothed by a Gaussian of ``sigma``
    blocks for display (0: none). One heatmap per pair in a grid.

    JSON: {"sigma", "pairs": [{"first", "second", "first_class", "second_class", "cosine":
    [18][18], "displayed": [18][18]}]}. Returns {"pairs": count}."""
    if not pairs:
        raise ValueError("alignment heatmaps need at least one pair of videos")
    position = {str(video_id): index for index, video_id in enumerate(fs.block_video_ids)}
    label_of = dict(zip(fs.video_ids.astype(str).tolist(), fs.labels.tolist()))
    unknown = sorted({video_id for pair in pairs for video_id in pair if video_id not in position})
    if unknown:
        raise ValueError(f"({fs.init}, {fs.view}): no block features for {unknown}")
    columns = min(3, len(pairs))
    grid_rows = math.ceil(len(pairs) / columns)
    figure = _figure(figsize=(4.6 * columns, 4.4 * grid_rows))
    entries = []
    for number, (first, second) in enumerate(pairs):
        cosine = block_similarity(fs.blocks[position[first]], fs.blocks[position[second]])  # [18, 18]
        relative = relative_similarities(cosine)
        displayed = gaussian_filter(relative, sigma) if sigma > 0 else relative
        first_class, second_class = class_names[label_of[first]], class_names[label_of[second]]
        axes = figure.add_subplot(grid_rows, columns, number + 1)
        image = axes.imshow(displayed, cmap="viridis", origin="upper", aspect="equal")
        axes.set_title(f"{first_class} vs {second_class}", fontsize="medium")
        axes.set_ylabel(f"blocks of {first}", fontsize="small")
        axes.set_xlabel(f"blocks of {second}", fontsize="small")
        figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="relative similarity")
        entries.append({"first": first, "second": second, "first_class": first_class, "second_class": second_class,
                        "cosine": cosine.tolist(), "displayed": displayed.tolist()})
    figure.suptitle(f"Soft alignment ({fs.init}, {fs.view}): relative block similarities"
                    + (f", smoothed (sigma {sigma:g})" if sigma > 0 else ""))
    _save(figure, png)
    _write_json(json_path, {"sigma": sigma, "pairs": entries})
    return {"pairs": len(entries)}


def same_class_pairs(fs: FeatureSet, count: int, seed: int = 0) -> list[tuple[str, str]]:
    """Up to ``count`` pairs of distinct test videos of the same class (among those with block
    features), spread over as many classes as possible: one pair per class in a shuffled
    class order, then a second round, and so on. Deterministic for a ``seed``."""
    label_of = dict(zip(fs.video_ids.astype(str).tolist(), fs.labels.tolist()))
    by_class: dict[int, list[str]] = {}
    for video_id in fs.block_video_ids.astype(str).tolist():
        by_class.setdefault(label_of[video_id], []).append(video_id)
    generator = np.random.default_rng(seed)
    candidates = []  # per class, its pairs in a shuffled order
    for label in sorted(by_class):
        videos = by_class[label]
        pairs = [(videos[i], videos[j]) for i in range(len(videos)) for j in range(i + 1, len(videos))]
        if pairs:
            candidates.append([pairs[index] for index in generator.permutation(len(pairs))])
    candidates = [candidates[index] for index in generator.permutation(len(candidates))]
    chosen = []
    for round_number in range(max((len(pairs) for pairs in candidates), default=0)):
        chosen += [pairs[round_number] for pairs in candidates if round_number < len(pairs)]
    return chosen[:count]


def _framed(axes, color: str, width: float) -> None:
    """Hide the ticks but keep the image's border, in ``color``."""
    axes.set_xticks([])
    axes.set_yticks([])
    for spine in axes.spines.values():
        spine.set_edgecolor(color)
        spine.set_linewidth(width)


def nearest_neighbour_figure(rows: list[dict], frame: Callable[[str], np.ndarray], class_names: list[str], png,
                             json_path) -> dict:
    """One row of images per query (rows of retrieval.nearest_neighbours): the query framed in
    aqua (the paper's Fig. 11), then its neighbours, titled with their class and similarity,
    green where of the query's class, red otherwise. ``frame(video_id)`` gives an ``[H, W, 3]``
    uint8 RGB image of the video.

    JSON: the rows with "query_class" and each neighbour's "class" added. Returns
    {"queries", "neighbours", "same_class"} (counts)."""
    if not rows:
        raise ValueError("the nearest-neighbour figure needs at least one query")
    columns = 1 + max(len(row["neighbours"]) for row in rows)
    figure = _figure(figsize=(2.2 * columns, 2.3 * len(rows)))
    named, same_class = [], 0
    for number, row in enumerate(rows):
        axes = figure.add_subplot(len(rows), columns, number * columns + 1)
        axes.imshow(frame(row["query"]))
        _framed(axes, QUERY_COLOR, 5)
        axes.set_title(f"query: {class_names[row['query_label']]}", fontsize="small")
        axes.set_xlabel(row["query"], fontsize="x-small")
        neighbours = []
        for rank, neighbour in enumerate(row["neighbours"]):
            match = neighbour["label"] == row["query_label"]
            same_class += match
            axes = figure.add_subplot(len(rows), columns, number * columns + rank + 2)
            axes.imshow(frame(neighbour["video_id"]))
            color = "green" if match else "red"
            _framed(axes, color, 2)
            axes.set_title(f"{class_names[neighbour['label']]}\ncos {neighbour['similarity']:.2f}", fontsize="small",
                           color=color)
            axes.set_xlabel(neighbour["video_id"], fontsize="x-small")
            neighbours.append({**neighbour, "class": class_names[neighbour["label"]]})
        named.append({**row, "query_class": class_names[row["query_label"]], "neighbours": neighbours})
    figure.suptitle("Nearest neighbours (query framed in aqua; green: same class, red: other class)")
    _save(figure, png)
    _write_json(json_path, named)
    return {"queries": len(rows), "neighbours": sum(len(row["neighbours"]) for row in rows),
            "same_class": int(same_class)}


def metric_kind(name: str) -> str | None:
    """The panel of the training curves that metric column ``name`` of a metrics.csv belongs
    to (columns of cocon.train.pretrain and cocon.train.finetune), or None for the per-term
    losses (cpc/..., sync/..., sim/...), which are written to the CSV only: with four
    views they would be 16 lines per run and panel."""
    if name in ("loss", "val_loss"):
        return "loss"
    if "top1" in name:
        return "top-1 accuracy"
    if name == "lr":
        return "learning rate"
    if name in ("seconds", "val_seconds"):
        return "seconds per epoch"
    if name == "clips_per_s":
        return "clips per second"
    return None


def _read_metrics(path: Path) -> list[tuple[int, str, float]]:
    """(epoch, metric, value) of every filled cell of a metrics.csv."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: metrics file not found")
    values = []
    with open(path, newline="") as handle:
        for line, row in enumerate(csv.DictReader(handle), start=2):
            try:
                epoch = int(row.pop("epoch"))
                values += [(epoch, name, float(value)) for name, value in row.items() if value not in ("", None)]
            except (KeyError, TypeError, ValueError) as error:
                raise ValueError(f"{path} line {line}: not a metrics row ({error})") from error
    if not values:
        raise ValueError(f"{path}: no epoch recorded")
    return values


def training_curves(runs: dict[str, str | os.PathLike], png, csv_path) -> dict:
    """Training curves of ``runs`` (run name -> its metrics.csv, as cocon.train.history
    writes it): one panel per kind of metric present (metric_kind), one line per run and
    metric against the epoch, validation metrics dashed.

    CSV columns: run, epoch, metric, value (every metric, long format). Returns {run: epochs}."""
    if not runs:
        raise ValueError("training curves need at least one run")
    records = {run: _read_metrics(Path(path)) for run, path in runs.items()}
    kinds = list(dict.fromkeys(kind for values in records.values() for _, name, _ in values
                               if (kind := metric_kind(name)) is not None))
    if not kinds:
        raise ValueError(f"runs {list(runs)}: no plottable metric (loss, top-1, lr, seconds)")
    columns = min(2, len(kinds))
    figure = _figure(figsize=(6.0 * columns, 4.0 * math.ceil(len(kinds) / columns)))
    palette = colormaps["tab10"]
    for number, kind in enumerate(kinds):
        axes = figure.add_subplot(math.ceil(len(kinds) / columns), columns, number + 1)
        for run_number, (run, values) in enumerate(records.items()):
            names = list(dict.fromkeys(name for _, name, _ in values if metric_kind(name) == kind))
            for name in names:
                points = sorted((epoch, value) for epoch, metric, value in values if metric == name)
                epochs, series = zip(*points)
                axes.plot(epochs, series, color=palette(run_number % 10), marker=".",
                          linestyle="--" if name.startswith("val_") else "-", label=f"{run}: {name}")
        if kind == "learning rate" and all(value > 0 for line in axes.get_lines() for value in line.get_ydata()):
            axes.set_yscale("log")
        axes.set_title(kind)
        axes.set_xlabel("epoch")
        axes.set_ylabel(kind)
        axes.legend(fontsize="x-small")
    figure.suptitle("Training curves (solid: train, dashed: validation)")
    _save(figure, png)
    _write_csv(csv_path, ["run", "epoch", "metric", "value"],
               [[run, epoch, name, value] for run, values in records.items() for epoch, name, value in values])
    return {run: len({epoch for epoch, _, _ in values}) for run, values in records.items()}
