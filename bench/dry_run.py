"""Planning at the paper's scale: `snakemake -n results/ucf101/paper.md` with the shipped
ucf101, hmdb51 and kinetics400 configs over the full official UCF101 and HMDB51 split
lists (13,320 + 6,766 videos, none on disk) and a Kinetics-400-sized annotation file of
made-up names (400 classes x 600 clips, 50 of each for testing: only the count matters for
planning; the roots are empty folders), against the
same command on the 40-video demo. Prints JSON."""
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
BUDGET = {"seconds": 10, "jobs": 2500}


def dry_run(workdir: Path, target: str) -> tuple[float, dict[str, int]]:
    start = time.perf_counter()
    result = subprocess.run(
        [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "-n", "--quiet", "rules",
         "--cores", "4", target, "--configfile", str(workdir / "config.yaml")],
        capture_output=True, text=True, check=True,
    )
    elapsed = time.perf_counter() - start
    return elapsed, {rule: int(count) for rule, count in re.findall(r"^(\w+)\s+(\d+)$", result.stdout, re.MULTILINE)}


def write_configs(workdir: Path, splits: Path) -> None:
    with open(workdir / "k400.csv", "w") as handle:
        handle.write("label,youtube_id,time_start,time_end,split\n")
        for label in range(400):
            handle.writelines(f"class {label},y{label}v{index:04d},10,20,{'test' if index < 50 else 'train'}\n"
                              for index in range(600))
    for root in ("UCF-101", "hmdb51", "k400"):
        (workdir / root).mkdir()
    datasets = REPO / "config" / "datasets"
    (workdir / "ucf101.yaml").write_text(f"base: {datasets / 'ucf101.yaml'}\nroot: {workdir / 'UCF-101'}\n"
                                         f"splits: {splits / 'ucfTrainTestlist'}\n")
    (workdir / "hmdb51.yaml").write_text(f"base: {datasets / 'hmdb51.yaml'}\nroot: {workdir / 'hmdb51'}\n"
                                         f"splits: {splits / 'hmdb51_testTrainMulti_7030_splits'}\n")
    (workdir / "kinetics400.yaml").write_text(f"base: {datasets / 'kinetics400.yaml'}\nroot: {workdir / 'k400'}\n"
                                              f"annotations: [{workdir / 'k400.csv'}]\n")
    (workdir / "demo.yaml").write_text(f"base: {datasets / 'demo.yaml'}\n")
    (workdir / "config.yaml").write_text("datasets: {ucf101: ucf101.yaml, hmdb51: hmdb51.yaml, "
                                         "kinetics400: kinetics400.yaml, demo: demo.yaml}\ntargets: [ucf101]\n")


def main() -> None:
    splits = SHARED_DATA / "splits"
    if not (splits / "ucfTrainTestlist").exists():
        sys.exit(f"needs the official UCF101 and HMDB51 split files in {splits}")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        write_configs(workdir, splits)
        demo_seconds, demo_jobs = dry_run(workdir, "results/demo/paper.md")
        paper_seconds, paper_jobs = dry_run(workdir, "results/ucf101/paper.md")
    print(json.dumps({
        "benchmark": "dry_run", "target": "results/ucf101/paper.md",
        "videos": {"ucf101": 13320, "hmdb51": 6766, "kinetics400 (made-up names)": 240000},
        "paper_seconds": round(paper_seconds, 2), "paper_jobs": paper_jobs,
        "demo_seconds": round(demo_seconds, 2), "demo_jobs": demo_jobs,
        "paper_to_demo_time_ratio": round(paper_seconds / demo_seconds, 2),
        "budget": BUDGET,
        "within_budget": paper_seconds <= BUDGET["seconds"] and paper_jobs["total"] <= BUDGET["jobs"],
    }, indent=2))


if __name__ == "__main__":
    main()
