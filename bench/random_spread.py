"""The seed-to-seed spread of random (untrained) encoders on the evidence benchmark's views
(README "Evidence"): linear-probe top-1 and R@1 per training seed at each encoder width,
with the probe's test top-1 at every C beside the one cross-validation chose. No training
is needed, so it says in minutes how much of the benchmark's spread belongs to the
initialisation itself. Needs results/evidence/views and manifest.tsv (`snakemake --until
flow results/evidence/evidence.json`). Prints JSON."""
from __future__ import annotations

import argparse
import copy
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from bench.common import REPO
from cocon.analysis.features import FeaturesJob, compute_features
from cocon.analysis.probe import DEFAULT_CS, _fit, linear_probe
from cocon.analysis.retrieval import GALLERY_ROLES, QUERY_ROLES, normalized, recall_at_k
from cocon.config import load_dataset_config

RESULTS = REPO / "results" / "evidence"


def seed_row(dataset: dict, view: str, width: float, seed: int, workdir: Path) -> dict:
    settings = copy.deepcopy(dataset)
    settings["pretrain"].update(width=width, seed=seed)
    features = compute_features(FeaturesJob(settings, "random", view, str(RESULTS / "views"),
                                            str(RESULTS / "manifest.tsv"), None, str(workdir / "unused.npz"),
                                            threads=1))
    probe = linear_probe(features)
    fitted, test = features.role("train", "val"), features.role("test")
    test_top1_by_c = {str(c): float(np.mean(_fit(features.context[fitted], features.labels[fitted], c, 0)
                                            .predict(features.context[test]) == features.labels[test]))
                      for c in DEFAULT_CS}
    context = normalized(features.context)
    queries, gallery = features.role(*QUERY_ROLES), features.role(*GALLERY_ROLES)
    r1 = recall_at_k(context[queries] @ context[gallery].T, features.labels[queries], features.labels[gallery],
                     ks=(1,))[1]
    return {"seed": seed, "probe_top1": 100 * probe["top1"], "C": probe["C"], "retrieval_r1": 100 * r1,
            "test_top1_by_C": {c: 100 * value for c, value in test_top1_by_c.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--view", default="rgb")
    parser.add_argument("--widths", type=float, nargs="+", default=[0.125, 0.25])
    parser.add_argument("--seeds", type=int, default=8, help="seeds 0..N-1")
    args = parser.parse_args()
    if not (RESULTS / "manifest.tsv").is_file():
        raise SystemExit(f"{RESULTS / 'manifest.tsv'} is missing: build the evidence views first "
                         "(snakemake --until flow results/evidence/evidence.json)")
    torch.set_num_threads(1)
    dataset = load_dataset_config(REPO / "config" / "datasets" / "evidence.yaml")
    report = {"view": args.view, "widths": {}}
    with tempfile.TemporaryDirectory() as workdir:
        for width in args.widths:
            rows = [seed_row(dataset, args.view, width, seed, Path(workdir)) for seed in range(args.seeds)]
            summary = {metric: {"mean": float(np.mean([row[metric] for row in rows])),
                                "std": float(np.std([row[metric] for row in rows], ddof=1)) if len(rows) > 1 else None}
                       for metric in ("probe_top1", "retrieval_r1")}
            report["widths"][str(width)] = {"per_seed": rows, **summary}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
