"""Planning at UCF101 scale: `snakemake -n` over the full official split lists (13,320
videos, none on disk), against the same command on the 40-video demo. Prints JSON."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import REPO, SHARED_DATA

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def dry_run(workdir: Path, target: str) -> tuple[float, int]:
    start = time.perf_counter()
    result = subprocess.run(
        [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--configfile",
         str(workdir / "config.yaml"), "-n", "--cores", "4", target],
        capture_output=True, text=True, check=True,
    )
    elapsed = time.perf_counter() - start
    total = int(re.search(r"^total\s+(\d+)$", result.stdout, re.MULTILINE).group(1))
    return elapsed, total


def main() -> None:
    splits = SHARED_DATA / "splits" / "ucfTrainTestlist"
    if not splits.exists():
        sys.exit(f"needs the official UCF101 split files in {splits}")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        (workdir / "ucf101.yaml").write_text(f"layout: ucf101\nroot: {workdir / 'UCF-101'}\nsplits: {splits}\n")
        (workdir / "demo.yaml").write_text((REPO / "config" / "datasets" / "demo.yaml").read_text())
        (workdir / "config.yaml").write_text("datasets: {ucf101: ucf101.yaml, demo: demo.yaml}\n")
        demo_seconds, demo_jobs = dry_run(workdir, "results/demo/views.tsv")
        ucf_seconds, ucf_jobs = dry_run(workdir, "results/ucf101/views.tsv")
    print(json.dumps({
        "benchmark": "dry_run", "videos": 13320,
        "ucf101_seconds": round(ucf_seconds, 2), "ucf101_jobs": ucf_jobs,
        "demo_seconds": round(demo_seconds, 2), "demo_jobs": demo_jobs,
        "ucf101_to_demo_time_ratio": round(ucf_seconds / demo_seconds, 2),
        "budget": {"seconds": 10, "jobs": 1000},
    }, indent=2))


if __name__ == "__main__":
    main()
