"""How much of the evidence benchmark's probe spread belongs to the choice of C (README
"Evidence"): per init, view and training seed of a finished `make evidence`, the C that
cross-validation chose, the cross-validated top-1 at every C of the grid, and the test
top-1 at every C, with the paired difference CoCon − CPC per seed at each fixed C. The
test top-1 by C is a post-hoc diagnosis of the measurement and never feeds back into it:
the benchmark's number is the one at the chosen C. With ``--cs``, the same for another grid
(to see whether the grid's edge binds). Prints JSON."""
from __future__ import annotations

import argparse
import json
import statistics

import numpy as np
from threadpoolctl import threadpool_limits

from bench.common import REPO
from cocon.analysis.features import FeatureSet
from cocon.analysis.probe import DEFAULT_CS, linear_probe, top1_at_every_c
from cocon.evidence import interval95

SEED_DATASETS = ["evidence", "evidence_seed1", "evidence_seed2"]
FEATURES = {"random": "random", "cpc": "{dataset}/cpc", "cocon": "{dataset}/cocon/rgb+flow"}


def seed_row(features: FeatureSet, cs: tuple[float, ...]) -> dict:
    probe = linear_probe(features, cs)
    return {"probe_top1": 100 * probe["top1"], "C": probe["C"],
            "cv_top1_by_C": {c: 100 * value for c, value in probe["cv_top1_by_C"].items()},
            "test_top1_by_C": {c: 100 * value for c, value in top1_at_every_c(features, cs).items()},
            "C_at_grid_edge": probe["C"] == max(cs)}


def spread(values: list[float]) -> dict:
    return {"mean": float(np.mean(values)), "std": statistics.stdev(values) if len(values) > 1 else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cs", type=float, nargs="+", default=list(DEFAULT_CS), help="the grid of C (the probe's own by default)")
    parser.add_argument("--datasets", nargs="+", default=SEED_DATASETS,
                        help="one dataset per training seed (make evidence-confirm: evidence_seed3 evidence_seed4 evidence_seed5)")
    args = parser.parse_args()
    cs = tuple(sorted(args.cs))
    report = {"cs": list(cs), "datasets": args.datasets, "cells": {}}
    with threadpool_limits(1):
        for init, pattern in FEATURES.items():
            for view in ("rgb", "flow"):
                rows = []
                for dataset in args.datasets:
                    path = REPO / "results" / dataset / "split1" / "features" / pattern.format(dataset=dataset) / f"{view}.npz"
                    if not path.is_file():
                        raise SystemExit(f"{path} is missing: run `make evidence` first")
                    rows.append(seed_row(FeatureSet.load(path), cs))
                report["cells"][f"{init}/{view}"] = {
                    "per_seed": rows, "at_chosen_C": spread([row["probe_top1"] for row in rows]),
                    **{f"at_C={c:g}": spread([row["test_top1_by_C"][str(c)] for row in rows]) for c in cs}}
    report["paired_cocon_cpc"] = {}
    for view in ("rgb", "flow"):
        cocon, cpc = report["cells"][f"cocon/{view}"]["per_seed"], report["cells"][f"cpc/{view}"]["per_seed"]
        for name, top1 in [("chosen C", lambda row: row["probe_top1"])] + \
                [(f"C={c:g}", lambda row, c=c: row["test_top1_by_C"][str(c)]) for c in cs]:
            differences = [top1(ours) - top1(theirs) for ours, theirs in zip(cocon, cpc)]
            report["paired_cocon_cpc"][f"{view} at {name}"] = {"per_seed": differences, "mean": float(np.mean(differences)),
                                                                "ci95": interval95(differences)}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
