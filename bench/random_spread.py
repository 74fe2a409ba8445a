"""The seed-to-seed spread of random (untrained) encoders on the evidence benchmark's views
(README "Evidence"), per training seed at each encoder width and input size:

- linear-probe top-1 and R@1 as the benchmark measures them, with the probe's test top-1 at
  every C beside the one cross-validation chose;
- the probe with twice the training videos: fitted on train + val alone, then on train +
  val + half of each class's test videos, both scored on the other half. If the spread
  came from the probe's small training set, the second would spread less;
- the encoder f against the whole model g(f): 5-fold cross-validated top-1 over the test
  videos of f's block features (averaged over the 18 alignment blocks) and of the context.
  If the aggregator's random initialisation made the spread, f's would spread less;
- with ``--statistics placeholder recalibrated``, both definitions of the random baseline:
  BatchNorm as built (eval mode normalises with mean 0 and variance 1: the benchmark's) and
  with running statistics recalibrated on the train windows, as a checkpoint without
  statistics gets them.

No training is needed, so it says in minutes how much of the benchmark's spread belongs to
the initialisation itself. Needs results/evidence/views and manifest.tsv (`snakemake --until
flow results/evidence/evidence.json`). Prints JSON."""
from __future__ import annotations

import argparse
import copy
import itertools
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from threadpoolctl import threadpool_limits

from bench.common import REPO
from cocon.analysis.features import FeatureSet, FeaturesJob, compute_features
from cocon.analysis.probe import (DEFAULT_C, DEFAULT_CS, FOLDS, _fit, _probe, cross_validated_top1, linear_probe,
                                  top1_at_every_c)
from cocon.analysis.retrieval import GALLERY_ROLES, QUERY_ROLES, normalized, recall_at_k
from cocon.config import load_dataset_config

RESULTS = REPO / "results" / "evidence"
METRICS = ("probe_top1", "retrieval_r1", "probe_top1_fit_train", "probe_top1_fit_doubled",
           "encoder_probe_cv", "context_probe_cv")


def probe_with_cv(features: np.ndarray, labels: np.ndarray, test_features: np.ndarray, test_labels: np.ndarray) -> float:
    """Test top-1 (%) of a probe whose C is cross-validated on ``features``, as linear_probe does."""
    by_c = cross_validated_top1(features, labels, DEFAULT_CS, FOLDS, 0)
    chosen = float(max(by_c, key=by_c.get))
    return 100 * float(np.mean(_fit(features, labels, chosen, 0).predict(test_features) == test_labels))


def doubled_training(features: FeatureSet) -> dict[str, float]:
    """The probe fitted on train + val, then on train + val + half of each class's test
    videos (drawn with seed 0), both scored on the test videos of the other half."""
    test = np.flatnonzero(features.role("test"))
    rng = np.random.default_rng(0)
    added = np.concatenate([rng.permutation(test[features.labels[test] == label])[:np.sum(features.labels[test] == label) // 2]
                            for label in np.unique(features.labels[test])])
    scored = np.setdiff1d(test, added)
    fitted = np.flatnonzero(features.role("train", "val"))
    doubled = np.concatenate([fitted, added])
    x, y = features.context, features.labels
    return {"probe_top1_fit_train": probe_with_cv(x[fitted], y[fitted], x[scored], y[scored]),
            "probe_top1_fit_doubled": probe_with_cv(x[doubled], y[doubled], x[scored], y[scored]),
            "fit_train_videos": len(fitted), "fit_doubled_videos": len(doubled), "scored_videos": len(scored)}


def encoder_against_context(features: FeatureSet) -> dict[str, float]:
    """Cross-validated top-1 (%, C = 1) over the test videos of f's block features and of the context."""
    position = {video: index for index, video in enumerate(features.video_ids)}
    rows = np.array([position[video] for video in features.block_video_ids])
    labels = features.labels[rows]
    splitter = StratifiedKFold(n_splits=FOLDS, shuffle=True, random_state=0)
    top1 = {}
    for name, x in (("encoder_probe_cv", features.blocks.mean(axis=1)), ("context_probe_cv", features.context[rows])):
        top1[name] = 100 * float(np.mean(cross_val_predict(_probe(DEFAULT_C, 0), x, labels, cv=splitter) == labels))
    return top1


def seed_row(dataset: dict, view: str, width: float, input_size: int, statistics: str, seed: int,
             workdir: Path) -> dict:
    settings = copy.deepcopy(dataset)
    settings["pretrain"].update(width=width, seed=seed)
    settings["pretrain"]["input_size"][view] = input_size
    features = compute_features(FeaturesJob(settings, "random", view, str(RESULTS / "views"),
                                            str(RESULTS / "manifest.tsv"), None, str(workdir / "unused.npz"),
                                            threads=1, recalibrate_random=statistics == "recalibrated"))
    probe = linear_probe(features)
    context = normalized(features.context)
    queries, gallery = features.role(*QUERY_ROLES), features.role(*GALLERY_ROLES)
    r1 = recall_at_k(context[queries] @ context[gallery].T, features.labels[queries], features.labels[gallery],
                     ks=(1,))[1]
    return {"seed": seed, "probe_top1": 100 * probe["top1"], "C": probe["C"], "retrieval_r1": 100 * r1,
            "test_top1_by_C": {c: 100 * value for c, value in top1_at_every_c(features).items()},
            **doubled_training(features), **encoder_against_context(features)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--view", default="rgb")
    parser.add_argument("--widths", type=float, nargs="+", default=[0.125])
    parser.add_argument("--input-sizes", type=int, nargs="+", default=[40],
                        help="crop sizes in pixels (the benchmark's: 40)")
    parser.add_argument("--seeds", type=int, default=8, help="seeds 0..N-1")
    parser.add_argument("--statistics", nargs="+", choices=["placeholder", "recalibrated"], default=["placeholder"],
                        help="BatchNorm statistics of the random encoders (the benchmark's: placeholder)")
    args = parser.parse_args()
    if not (RESULTS / "manifest.tsv").is_file():
        raise SystemExit(f"{RESULTS / 'manifest.tsv'} is missing: build the evidence views first "
                         "(snakemake --until flow results/evidence/evidence.json)")
    torch.set_num_threads(1)
    dataset = load_dataset_config(REPO / "config" / "datasets" / "evidence.yaml")
    report = {"view": args.view, "settings": []}
    with tempfile.TemporaryDirectory() as workdir, threadpool_limits(1):
        for width in args.widths:
            for input_size, statistics in itertools.product(args.input_sizes, args.statistics):
                rows = [seed_row(dataset, args.view, width, input_size, statistics, seed, Path(workdir))
                        for seed in range(args.seeds)]
                summary = {metric: {"mean": float(np.mean([row[metric] for row in rows])),
                                    "std": float(np.std([row[metric] for row in rows], ddof=1)) if len(rows) > 1 else None}
                           for metric in METRICS}
                report["settings"].append({"width": width, "input_size": input_size, "statistics": statistics,
                                           "per_seed": rows, **summary})
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
