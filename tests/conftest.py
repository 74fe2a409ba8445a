"""Shared fixtures: the real clips and split files in ../shared/data, and a Snakemake runner."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("COCON_SHARED_DATA", REPO.parent / "shared" / "data"))
SNAKEMAKE = Path(sys.executable).with_name("snakemake")


NO_REAL_DATA = "needs the real data in"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """With ``COCON_REQUIRE_MM=1`` (CI, after `make mm`) an ``mm`` test skipped for its packages
    fails instead: `make mm` ran, so they must import. A skip for absent real data stays a skip,
    as in every other test: a checkout without ../shared/data still passes."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and item.get_closest_marker("mm") and os.environ.get("COCON_REQUIRE_MM") == "1":
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if NO_REAL_DATA in reason:
            return
        report.outcome = "failed"
        report.longrepr = f"{reason}\nCOCON_REQUIRE_MM=1 requires every mm test to run, and this one skipped"


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{NO_REAL_DATA} {path} (../shared/data beside the repository); it is absent here")
    return path


@pytest.fixture(scope="session")
def ucf_splits() -> Path:
    return _require(SHARED_DATA / "splits" / "ucfTrainTestlist")


@pytest.fixture(scope="session")
def hmdb_splits() -> Path:
    return _require(SHARED_DATA / "splits" / "hmdb51_testTrainMulti_7030_splits")


@pytest.fixture(scope="session")
def videos_dir() -> Path:
    return _require(SHARED_DATA / "videos")


@pytest.fixture(scope="session")
def real_clip(videos_dir) -> Path:
    return videos_dir / "ucf101" / "PushUps" / "v_PushUps_g02_c03.avi"


def write_yaml(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def run_snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run the repository's Snakefile in ``workdir`` (results land under workdir/results).

    Targets go before options such as --configfile and --forcerun, which take several values."""
    command = [str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--cores", "2", *args]
    result = subprocess.run(command, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-8000:]}")
    return result


def workflow_config(workdir: Path, datasets: dict[str, str], targets: list[str]) -> Path:
    """A workflow config in ``workdir`` naming only the given dataset files."""
    lines = ["datasets:"] + [f"  {name}: {path}" for name, path in datasets.items()]
    lines += [f"targets: [{', '.join(targets)}]", "threads: {manifest: 2, frames: 1, flow: 2}"]
    return write_yaml(workdir / "config.yaml", "\n".join(lines) + "\n")


def build_demo_views(root: Path, dataset: dict) -> Path:
    """Generate ``dataset``'s demo videos under ``root`` and their rgb and flow shards, through
    the real stages (the dataset's shard_size must hold every video in shard 00000)."""
    from cocon.data.demo import generate_demo
    from cocon.data.manifest import run_manifest
    from cocon.views.flow import extract_flow
    from cocon.views.frames import extract_frames

    generate_demo(root / "videos", **dataset["demo"])
    run_manifest(dataset, root / "manifest.tsv", root / "excluded.tsv")
    extract_frames(dataset, root / "manifest.tsv", "00000", root / "views" / "rgb" / "00000.h5")
    extract_flow(dataset, root / "views" / "rgb" / "00000.h5", root / "views" / "flow" / "00000.h5")
    return root
