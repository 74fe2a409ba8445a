"""The paper's qualitative analyses of one split (DESIGN.md section 7), from the frozen
features of every analysed initialisation and view:

- class consistency, CPC against each joint method (Tables 4/7, appendix B.2);
- per view: t-SNE of the test videos (Fig. 3/8) and the cosine-similarity histograms of
  same-class against other-class pairs with their ROC AUC (Fig. 10), CPC beside the
  joint methods;
- per joint method: the per-class top-1 gains of the fine-tuned models over CPC (Fig. 4);
- soft alignment of same-class test pairs from their 18 block features (Fig. 5/9);
- nearest neighbours of a few test queries among the train videos (Fig. 11);
- the training curves of every pretraining and fine-tuning run.

Every figure is a PNG with its data beside it; ``index.json`` in the figures folder lists
them with their section, title and caption, which the HTML report shows.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cocon.analysis import figures
from cocon.analysis.consistency import consistency_document, consistency_markdown
from cocon.analysis.features import FeatureSet
from cocon.analysis.pairs import variants_of
from cocon.analysis.retrieval import nearest_neighbours
from cocon.data.manifest import read_manifest
from cocon.data.shards import ShardReader
from cocon.experiments import JOINT_METHODS, parse_init
from cocon.train.evaluate import ROW_NAMES, ensemble_key

log = logging.getLogger(__name__)

INDEX = "index.json"


@dataclass
class AnalyseJob:
    dataset: dict
    split: int
    features: dict[tuple[str, str], str]   # (init, view) -> features file
    manifest: str
    details: str | None                    # the split's finetune_details.json (per-class top-1); None: no gains
    views_dir: str
    runs: dict[str, str]                   # run name -> a training output; its .state folder has metrics.csv
    figures_dir: str
    consistency_json: str
    consistency_markdown: str
    threads: int | None = None


def init_label(name: str) -> str:
    """'ucf101/cocon/rgb+flow' -> 'CoCon (rgb+flow)': the row names of the results tables."""
    init = parse_init(name)
    return ROW_NAMES[init.method] + (f" ({init.view_set})" if init.views else "")


def metrics_file(output: str | os.PathLike) -> Path:
    """The metrics.csv a training job keeps in the state folder beside its output."""
    return Path(output).with_suffix(".state") / "metrics.csv"


class FigureIndex:
    """The figures written so far, saved as index.json for the report."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.entries: list[dict] = []

    def paths(self, stem: str, data_suffix: str) -> tuple[Path, Path]:
        return self.folder / f"{stem}.png", self.folder / f"{stem}{data_suffix}"

    def add(self, section: str, stem: str, data_suffix: str, title: str, caption: str) -> None:
        png, data = self.paths(stem, data_suffix)
        for path in (png, data):
            if not path.is_file() or path.stat().st_size == 0:
                raise RuntimeError(f"{path}: the figure {title!r} was not written")
        self.entries.append({"section": section, "png": png.name, "data": data.name, "title": title,
                             "caption": caption})

    def skip(self, section: str, title: str, note: str) -> None:
        """A figure that the data cannot give, with the reason, shown in the report in its place."""
        log.warning("%s: %s", title, note)
        self.entries.append({"section": section, "png": None, "data": None, "title": title, "caption": note})

    def save(self) -> Path:
        path = self.folder / INDEX
        path.write_text(json.dumps(self.entries, indent=1) + "\n")
        return path


def _class_indices(names: list[str], class_names: list[str], key: str) -> list[int]:
    known = {name: index for index, name in enumerate(class_names) if name}
    missing = [name for name in names if name not in known]
    if missing:
        log.warning("%s: %d classes are not in this dataset and are left out: %s", key, len(missing),
                    ", ".join(missing))
    return [known[name] for name in names if name in known]


@contextlib.contextmanager
def middle_frames(views_dir, manifest_rows, view: str = "rgb"):
    """Yields ``frame(video_id)``: the middle stored frame of a video, RGB uint8, for the
    neighbour figure; each shard is opened once, and closed on leaving."""
    shards = {row.video_id: row.shard for row in manifest_rows}
    frames = {row.video_id: row.num_frames for row in manifest_rows}
    readers: dict[str, ShardReader] = {}

    def frame(video_id: str) -> np.ndarray:
        shard = shards[video_id]
        if shard not in readers:
            readers[shard] = ShardReader(Path(views_dir) / view / f"{shard}.h5", view=view)
        middle = frames[video_id] // 2
        return readers[shard].read(video_id, middle, middle + 1)[0]

    try:
        yield frame
    finally:
        for reader in readers.values():
            reader.close()


def run_analyses(job: AnalyseJob) -> None:
    settings = job.dataset["analysis"]
    rows = read_manifest(job.manifest)
    num_classes = 1 + max(row.label_index for row in rows)
    class_names = [""] * num_classes
    for row in rows:
        class_names[row.label_index] = row.label
    sets = {key: FeatureSet.load(path) for key, path in job.features.items()}
    for (init, view), features in sets.items():
        if (features.init, features.view, features.split) != (init, view, job.split):
            raise ValueError(f"{job.features[(init, view)]}: holds {features.init} {features.view} split "
                             f"{features.split}, not {init} {view} split {job.split}")
    inits = list(dict.fromkeys(init for init, _ in sets))
    views = [view for view in job.dataset["views"] if any(key[1] == view for key in sets)]
    cpc = next((init for init in inits if parse_init(init).method == "cpc"), None)
    joints = [init for init in inits if parse_init(init).method in JOINT_METHODS]
    compared = ([cpc] if cpc else []) + joints or inits
    variants = variants_of(settings["center"])
    index = FigureIndex(job.figures_dir)
    # every features file of the split has the same videos in the same roles
    any_features = next(iter(sets.values()))
    test_count = int(any_features.role("test").sum())

    # class consistency: CPC against each joint method, on the joint method's views
    test_classes = len(set(any_features.labels[any_features.role("test")].tolist()))
    k = min(settings["consistency_k"], test_classes - 1)
    if cpc and joints and k >= 1:
        document = consistency_document({view: sets[(cpc, view)] for view in views if (cpc, view) in sets},
                                        {init: {view: sets[(init, view)] for view in views if (init, view) in sets}
                                         for init in joints}, class_names, k, variants)
        note = (f"analysis.consistency_k is {settings['consistency_k']}, but only {test_classes} classes have test "
                f"videos: k = {k} here.\n\n" if k < settings["consistency_k"] else "")
        Path(job.consistency_json).write_text(json.dumps(document, indent=1) + "\n")
        Path(job.consistency_markdown).write_text(note + consistency_markdown(document))
    else:
        reason = (f"only {test_classes} class has test videos" if k < 1 else
                  "it compares CPC with a joint method (cocon, cpc+sim, cpc+sync), and the analysed "
                  f"initialisations (analysis.inits, or finetune.inits) are {', '.join(inits)}")
        Path(job.consistency_json).write_text(json.dumps({"k": settings["consistency_k"], "inits": [],
                                                          "not_computed": reason}) + "\n")
        Path(job.consistency_markdown).write_text(f"Not computed: {reason}.\n")

    # t-SNE and similarity histograms per view, CPC beside the joint methods
    groups = settings["tsne_groups"]
    group_indices = ({group: _class_indices(names, class_names, f"analysis.tsne_groups.{group}")
                      for group, names in groups.items()} if groups else None)
    if group_indices is not None:
        group_indices = {group: members for group, members in group_indices.items() if members} or None
    tsne_classes = [index for members in group_indices.values() for index in members] if group_indices else None
    for view in views:
        panels = {init_label(init): sets[(init, view)] for init in compared if (init, view) in sets}
        _tsne(index, view, panels, class_names, tsne_classes, group_indices, settings["seed"], job.split)
        _similarities(index, view, panels, test_count, variants, settings["memory_mb"])

    # per-class gains of the fine-tuned models (Fig. 4)
    details = json.loads(Path(job.details).read_text()) if job.details else {"classes": class_names}
    names = details["classes"]
    for joint in joints:
        for view, baseline, improved in gain_comparisons(details, cpc, joint, views) if cpc else []:
            stem = f"gains_{joint.replace('/', '_')}_{view}"
            png, data = index.paths(stem, ".csv")
            summary = figures.per_class_gains(
                {names[int(label)]: accuracy for label, accuracy in baseline["per_class_top1"].items()},
                {names[int(label)]: accuracy for label, accuracy in improved["per_class_top1"].items()},
                png, data, extremes=settings["gain_extremes"], labels=(init_label(cpc), init_label(joint)))
            what = view if view != "ensemble" else f"ensemble of {'+'.join(improved['views'])}, for both"
            index.add("Per-class gains (Fig. 4)", stem, ".csv", f"Per-class gains, {init_label(joint)}, {view}",
                      f"Fine-tuned per-class top-1 of {init_label(joint)} minus {init_label(cpc)} ({what}), the "
                      f"largest gains (blue) and losses (red) on the test split of split {job.split}; "
                      f"{summary_text(summary)} A class's top-1 moves in steps of one over its test videos.")

    # soft alignment (Fig. 5/9) and nearest neighbours (Fig. 11) on the first view, for the
    # joint methods and CPC
    first_view = views[0]
    with middle_frames(job.views_dir, rows) as frame:
        for init in compared:
            features = sets.get((init, first_view))
            if features is None:
                continue
            _alignment(index, init, features, settings, class_names, test_count)
            if "rgb" in job.dataset["views"]:
                _neighbours(index, init, features, settings, class_names, frame)

    # training curves
    for kind in ("pretrain", "finetune"):
        runs = {name.removeprefix(kind + " "): metrics_file(output) for name, output in job.runs.items()
                if name.startswith(kind + " ")}
        if not runs:
            continue
        stem = f"curves_{kind}"
        png, data = index.paths(stem, ".csv")
        figures.training_curves(runs, png, data)
        what = ("pretraining (training and validation loss, learning rate)" if kind == "pretrain"
                else "fine-tuning (loss and accuracy on the train and validation parts)")
        index.add("Training curves", stem, ".csv", f"Training curves: {kind}",
                  f"Every {what} run of split {job.split}, per epoch, from its metrics.csv.")
    path = index.save()
    log.info("wrote %d figures and %s", len(index.entries), path)


def _tsne(index: FigureIndex, view: str, panels: dict[str, FeatureSet], class_names: list[str],
          classes: list[int] | None, groups: dict[str, list[int]] | None, seed: int, split: int) -> None:
    title = f"t-SNE of {view} features"
    shown_videos = _tsne_videos(next(iter(panels.values())), classes)
    if shown_videos < figures.TSNE_MIN_VIDEOS:
        index.skip("t-SNE (Fig. 3/8)", title, f"not drawn: {shown_videos} test videos of the chosen classes, and "
                                              f"t-SNE needs at least {figures.TSNE_MIN_VIDEOS}")
        return
    png, data = index.paths(f"tsne_{view}", ".csv")
    figures.tsne_figure(panels, class_names, png, data, classes=classes, groups=groups, seed=seed)
    shown = f"the {len(classes)} classes of analysis.tsne_groups" if classes else "every class"
    index.add("t-SNE (Fig. 3/8)", f"tsne_{view}", ".csv", title,
              f"t-SNE of the {view} video features F(.) (pooled context, averaged over dense windows; mean-centred "
              f"and L2-normalised) of the test videos of split {split}, {shown}; frozen encoders, one panel each. Clusters of semantically related "
              "classes are the paper's claim for CoCon; with few test videos per class the layout says little.")


def _similarities(index: FigureIndex, view: str, panels: dict[str, FeatureSet], test_count: int,
                  variants: tuple[str, ...], memory_mb: float) -> None:
    title = f"Cosine similarities of {view} features"
    if test_count < 2:
        index.skip("Cosine similarities (Fig. 10)", title, f"not drawn: {test_count} test video, no pair")
        return
    png, data = index.paths(f"similarity_{view}", ".json")
    aucs = figures.similarity_histograms(panels, png, data, variants=variants, memory_mb=memory_mb)
    shown = {"raw": "the raw cosine of the pooled context features, as the paper's Fig. 10",
             "centred": "the cosine after the features are mean-centred over the test videos and L2-normalised"}
    index.add("Cosine similarities (Fig. 10)", f"similarity_{view}", ".json", title,
              f"Cosine similarity of every pair of the {test_count} test videos, same class (blue) against other "
              "classes (orange); " + (f"{shown[variants[0]]}" if len(variants) == 1 else
                                      "top row: " + shown[variants[0]] + "; bottom row: " + shown[variants[1]])
              + ". ROC AUC of telling them apart: "
              + "; ".join(f"{variant}: " + ", ".join(f"{name} {'n/a (no same-class pair)' if auc is None else f'{auc:.3f}'}"
                                                    for name, auc in by_panel.items())
                          for variant, by_panel in aucs.items()) + ".")


def _alignment(index: FigureIndex, init: str, features: FeatureSet, settings: dict, class_names: list[str],
               test_count: int) -> None:
    title = f"Soft alignment, {init_label(init)}, {features.view}"
    pairs = ([tuple(pair) for pair in settings["alignment_pairs"]] if settings["alignment_pairs"] else
             figures.same_class_pairs(features, settings["alignment_pair_count"], settings["seed"]))
    known = set(features.block_video_ids.tolist())
    unknown = [video for pair in pairs for video in pair if video not in known]
    if unknown:
        # listed test videos (checked at planning) that the manifest excluded
        raise ValueError(f"analysis.alignment_pairs: {', '.join(unknown)} are not usable test videos of split "
                         f"{features.split} (see excluded.tsv)")
    if not pairs:
        index.skip("Soft alignment (Fig. 5/9)", title,
                   f"not drawn: no two of the {test_count} test videos share a class")
        return
    stem = f"alignment_{init.replace('/', '_')}_{features.view}"
    png, data = index.paths(stem, ".json")
    figures.alignment_heatmaps(features, pairs, class_names, png, data, sigma=settings["alignment_sigma"])
    index.add("Soft alignment (Fig. 5/9)", stem, ".json", title,
              "Raw cosine similarity of the 18 block features z' of one test video (rows) against another's (columns), "
              "each row rescaled to its own range (relative similarity) and smoothed with a Gaussian of "
              f"{settings['alignment_sigma']} blocks for display. The paper reads periodic actions and matching "
              "phases from such maps.")


def _neighbours(index: FigureIndex, init: str, features: FeatureSet, settings: dict, class_names: list[str],
                frame) -> None:
    queries = _one_query_per_class(features, settings["neighbour_queries"])
    neighbours = nearest_neighbours([features], settings["neighbours"], queries=queries,
                                    memory_mb=settings["memory_mb"])
    stem = f"neighbours_{init.replace('/', '_')}_{features.view}"
    png, data = index.paths(stem, ".json")
    figures.nearest_neighbour_figure(neighbours, frame, class_names, png, data)
    index.add("Nearest neighbours (Fig. 11)", stem, ".json", f"Nearest neighbours, {init_label(init)}, {features.view}",
              f"Test queries (left, framed) and their {settings['neighbours']} most similar train videos by the "
              f"cosine of their {features.view} features, mean-centred as retrieval compares them (middle frames "
              "shown); green titles share the query's class, red ones do not.")


def gain_comparisons(details: dict, cpc: str, joint: str, views: list[str]) -> list[tuple[str, dict, dict]]:
    """(view, CPC's details, the joint method's details) for each view both were fine-tuned
    on, and for the ensemble: the joint method's fused views against CPC's ensemble over
    the same views (finetune_details.json keys, cocon.train.evaluate.ensemble_key), never
    CPC's ensemble over views the joint method does not have."""
    comparisons = [(view, details[f"{cpc}/{view}"], details[f"{joint}/{view}"]) for view in views
                   if f"{cpc}/{view}" in details and f"{joint}/{view}" in details]
    improved = details.get(f"{joint}/ensemble")
    if improved is not None:
        baseline = details.get(f"{cpc}/ensemble")
        if baseline is None or baseline.get("views") != improved["views"]:
            baseline = details.get(ensemble_key(cpc, improved["views"]))
        if baseline is not None:
            comparisons.append(("ensemble", baseline, improved))
    return comparisons


def summary_text(summary: dict) -> str:
    parts = [f"{key.replace('_', ' ')} {value:.3f}" if isinstance(value, float) else f"{key.replace('_', ' ')} {value}"
             for key, value in summary.items()]
    return "; ".join(parts) + "."


def _tsne_videos(features: FeatureSet, classes: list[int] | None) -> int:
    test = features.role("test")
    return int(test.sum() if classes is None else np.isin(features.labels[test], classes).sum())


def _one_query_per_class(features: FeatureSet, count: int) -> list[str]:
    """The first test video of each of the first ``count`` classes (in label order)."""
    test = features.role("test")
    chosen = {}
    for video, label in zip(features.video_ids[test].tolist(), features.labels[test].tolist()):
        chosen.setdefault(label, video)
    return [chosen[label] for label in sorted(chosen)[:count]]
