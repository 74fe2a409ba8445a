"""The manifest stage: list a dataset, probe every video, assign shards.

``manifest.tsv`` has one row per listed video, usable or not; ``excluded.tsv`` repeats
the rows whose status is not ``ok``, so a user sees at a glance what was left out and why.
"""
from __future__ import annotations

import csv
import logging
from collections import Counter
from cocon.parallel import process_pool
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from cocon.data.datasets import VideoEntry, assign_shards, list_videos, resolve_path
from cocon.data.video import VideoProbe, probe_video

log = logging.getLogger(__name__)

COLUMNS = ("video_id", "label", "label_index", "splits", "shard", "status",
           "num_frames", "fps", "width", "height", "path")


class ExcludedVideosError(RuntimeError):
    """Raised in strict mode when any listed video is not usable."""


@dataclass(frozen=True)
class ManifestRow:
    video_id: str
    label: str
    label_index: int
    # comma-separated role per official split, e.g. "train,test,train"
    splits: str
    shard: str
    status: str
    num_frames: int
    fps: float
    width: int
    height: int
    path: str

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def role(self, split: int) -> str:
        return self.splits.split(",")[split - 1]


def _probe(path: Path) -> VideoProbe:
    return probe_video(path)


def build_manifest(dataset: dict, threads: int = 1) -> list[ManifestRow]:
    """Probe every video the dataset config lists, with ``threads`` processes."""
    entries = list_videos(dataset)
    root = Path(dataset["root"])
    shard_of = {entry.video_id: shard for shard, members in assign_shards(entries, dataset["shard_size"]).items()
                for entry in members}
    paths = [resolve_path(root, entry.relpath) for entry in entries]
    progress = dict(total=len(paths), desc=f"probing {dataset['name']} videos", unit="video", mininterval=5)
    if threads > 1:
        with process_pool(threads) as pool:
            probes = list(tqdm(pool.map(_probe, paths, chunksize=8), **progress))
    else:
        probes = [_probe(path) for path in tqdm(paths, **progress)]
    return [_row(entry, path, probe, shard_of[entry.video_id]) for entry, path, probe in zip(entries, paths, probes)]


def _row(entry: VideoEntry, path: Path, probe: VideoProbe, shard: str) -> ManifestRow:
    return ManifestRow(entry.video_id, entry.label, entry.label_index, ",".join(entry.splits), shard,
                       probe.status, probe.num_frames, round(probe.fps, 3), probe.width, probe.height, str(path))


def write_manifest(rows: list[ManifestRow], manifest_path: str | Path, excluded_path: str | Path) -> None:
    for path, selected in ((manifest_path, rows), (excluded_path, [row for row in rows if not row.ok])):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
            writer.writerow(COLUMNS)
            for row in selected:
                writer.writerow([getattr(row, column) for column in COLUMNS])


def read_manifest(path: str | Path) -> list[ManifestRow]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: manifest not found (run the manifest stage first)")
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise ValueError(f"{path}: columns {reader.fieldnames} are not the manifest's {list(COLUMNS)}")
        return [
            ManifestRow(row["video_id"], row["label"], int(row["label_index"]), row["splits"], row["shard"],
                        row["status"], int(row["num_frames"]), float(row["fps"]), int(row["width"]),
                        int(row["height"]), row["path"])
            for row in reader
        ]


def summarize(rows: list[ManifestRow]) -> str:
    """A few lines for the log: counts, exclusions by reason, and missing files."""
    excluded = [row for row in rows if not row.ok]
    lines = [f"{len(rows)} videos listed, {len(rows) - len(excluded)} usable, {len(excluded)} excluded"]
    reasons = Counter(row.status.split(":")[0] for row in excluded)
    for reason, count in reasons.most_common():
        examples = [row.path for row in excluded if row.status.split(":")[0] == reason][:3]
        lines.append(f"  {reason}: {count} (e.g. {', '.join(examples)})")
    return "\n".join(lines)


def run_manifest(dataset: dict, manifest_path, excluded_path, threads: int = 1) -> list[ManifestRow]:
    """The whole stage: probe, write both tables, log a summary, and fail in strict mode."""
    rows = build_manifest(dataset, threads)
    summary = summarize(rows)
    log.info("%s", summary)
    excluded = [row for row in rows if not row.ok]
    if dataset["strict"] and excluded:
        details = "\n".join(f"  {row.path}: {row.status}" for row in excluded[:20])
        raise ExcludedVideosError(f"strict: true and {len(excluded)} videos are not usable:\n{details}")
    write_manifest(rows, manifest_path, excluded_path)
    return rows
