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
from functools import partial
from pathlib import Path

from tqdm import tqdm

from cocon.data.datasets import VideoEntry, assign_shards, list_videos, resolve_path
from cocon.data.trees import imports_of, probe_imported
from cocon.data.video import VideoProbe, probe_video

log = logging.getLogger(__name__)

COLUMNS = ("video_id", "label", "label_index", "splits", "shard", "status",
           "num_frames", "fps", "width", "height", "path")


class ExcludedVideosError(RuntimeError):
    """Raised in strict mode when any listed video is not usable."""


class TooFewUsableVideosError(RuntimeError):
    """Raised when fewer than ``min_usable_fraction`` of the listed videos are usable:
    most often a ``root`` that is not the folder holding the videos."""


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


def _probe_imported(dataset: dict, item: tuple[VideoEntry, Path | None]) -> tuple[VideoProbe, str]:
    return probe_imported(dataset, *item)


def build_manifest(dataset: dict, threads: int = 1) -> list[ManifestRow]:
    """Probe every video the dataset config lists, with ``threads`` processes: its video file,
    or, where ``frames.import`` (``flow.import``) is set, its frames (flows) in the import tree."""
    entries = list_videos(dataset)
    root = Path(dataset["root"]) if dataset.get("root") else None
    shard_of = {entry.video_id: shard for shard, members in assign_shards(entries, dataset["shard_size"]).items()
                for entry in members}
    paths = [resolve_path(root, entry.relpath) if root else None for entry in entries]
    progress = dict(total=len(paths), desc=f"probing {dataset['name']} videos", unit="video", mininterval=5)
    if any(imports_of(dataset)):
        work = partial(_probe_imported, dataset)
        if threads > 1:
            with process_pool(threads) as pool:
                probed = list(tqdm(pool.map(work, zip(entries, paths), chunksize=8), **progress))
        else:
            probed = [work(item) for item in tqdm(zip(entries, paths), **progress)]
        return [_row(entry, path, probe, shard_of[entry.video_id])
                for entry, (probe, path) in zip(entries, probed)]
    if threads > 1:
        with process_pool(threads) as pool:
            probes = list(tqdm(pool.map(_probe, paths, chunksize=8), **progress))
    else:
        probes = [_probe(path) for path in tqdm(paths, **progress)]
    return [_row(entry, path, probe, shard_of[entry.video_id]) for entry, path, probe in zip(entries, paths, probes)]


def _row(entry: VideoEntry, path: Path | str, probe: VideoProbe, shard: str) -> ManifestRow:
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


def _reason(row: ManifestRow) -> str:
    return row.status.split(":")[0]


def _exclusion_lines(rows: list[ManifestRow]) -> list[str]:
    excluded = [row for row in rows if not row.ok]
    lines = [f"{len(rows)} videos listed, {len(rows) - len(excluded)} usable, {len(excluded)} excluded"]
    reasons = Counter(_reason(row) for row in excluded)
    for reason, count in reasons.most_common():
        examples = [row.path for row in excluded if _reason(row) == reason][:3]
        lines.append(f"  {reason}: {count} (e.g. {', '.join(examples)})")
    return lines


def summarize(rows: list[ManifestRow]) -> str:
    """A few lines for the log: counts, exclusions by reason, missing files, and the
    classes that exclusions left without a train or test video."""
    lines = _exclusion_lines(rows)
    emptied = classes_without_usable_videos(rows)
    if emptied:
        lines.append(describe_emptied_classes(emptied))
    return "\n".join(lines)


def classes_without_usable_videos(rows: list[ManifestRow]) -> dict[str, list[str]]:
    """Classes that exclusions left with no usable train or test video in a split that
    lists some: label -> what it lacks ("no usable video", or "split 1 test", ...).

    Every split the listing defines is checked, not only ``official_splits``: the
    manifest does not depend on that key, so that adding a split reruns nothing."""
    by_label: dict[str, list[ManifestRow]] = {}
    for row in rows:
        by_label.setdefault(row.label, []).append(row)
    emptied: dict[str, list[str]] = {}
    for label, members in sorted(by_label.items()):
        if not any(row.ok for row in members):
            emptied[label] = [f"no usable video (all {len(members)} excluded)"]
            continue
        for split in range(1, len(members[0].splits.split(",")) + 1):
            for role in ("train", "test"):
                listed = [row for row in members if row.role(split) == role]
                if listed and not any(row.ok for row in listed):
                    emptied.setdefault(label, []).append(f"split {split} {role} ({len(listed)} excluded)")
    return emptied


def describe_emptied_classes(emptied: dict[str, list[str]]) -> str:
    lines = [f"  classes that exclusions left without a train or test video of a split ({len(emptied)}); they "
             "keep their label, but are never trained or tested on there:"]
    lines += [f"    {label}: {', '.join(gaps)}" for label, gaps in emptied.items()]
    return "\n".join(lines)


def check_usable_fraction(rows: list[ManifestRow], dataset: dict) -> None:
    """Fail when fewer than ``min_usable_fraction`` of the listed videos are usable, naming
    the root folder the videos were looked for in and the counts."""
    usable = sum(row.ok for row in rows)
    minimum = dataset["min_usable_fraction"]
    frames_import, _ = imports_of(dataset)
    if rows and usable < minimum * len(rows) and frames_import:
        counts = "\n".join(_exclusion_lines(rows))
        raise TooFewUsableVideosError(
            f"frames.import.root: {frames_import['root']}: {usable} of the {len(rows)} listed videos are usable "
            f"({usable / len(rows):.0%}), fewer than min_usable_fraction {minimum}. Is root the folder the "
            f"{frames_import['layout']} layout keeps its video folders in (README: Starting from frames and flow "
            f"you already have)? If most videos are meant to be absent, lower min_usable_fraction (0 accepts any "
            f"number).\n{counts}")
    if rows and usable < minimum * len(rows):
        counts = "\n".join(_exclusion_lines(rows))
        raise TooFewUsableVideosError(
            f"root: {dataset['root']}: {usable} of the {len(rows)} listed videos are usable "
            f"({usable / len(rows):.0%}), fewer than min_usable_fraction {minimum}. Is root the folder that holds "
            f"the class folders of videos? If most videos are meant to be absent, lower min_usable_fraction "
            f"(0 accepts any number).\n{counts}")


def run_manifest(dataset: dict, manifest_path, excluded_path, threads: int = 1) -> list[ManifestRow]:
    """The whole stage: probe, fail when too few videos are usable, log a summary (a
    warning when classes lost their videos), fail in strict mode on any exclusion, and
    write both tables."""
    rows = build_manifest(dataset, threads)
    check_usable_fraction(rows, dataset)
    emptied = classes_without_usable_videos(rows)
    log.log(logging.WARNING if emptied else logging.INFO, "%s", summarize(rows))
    excluded = [row for row in rows if not row.ok]
    if dataset["strict"] and excluded:
        details = "\n".join(f"  {row.path}: {row.status}" for row in excluded[:20])
        classes = f"\n{describe_emptied_classes(emptied)}" if emptied else ""
        raise ExcludedVideosError(f"strict: true and {len(excluded)} videos are not usable:\n{details}{classes}")
    write_manifest(rows, manifest_path, excluded_path)
    return rows
