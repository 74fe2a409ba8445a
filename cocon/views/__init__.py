"""The views of a video, each stored in HDF5 shards: rgb frames, optical flow, pose, segmentation."""
from __future__ import annotations

import csv
import logging
from pathlib import Path

from cocon.data.manifest import read_manifest
from cocon.data.shards import ShardReader, verify_shards

log = logging.getLogger(__name__)


def write_views_index(manifest_path, shard_paths, out_path, threads: int = 1) -> None:
    """A table of every view shard (view, shard, videos, stored frames, bytes), written only
    once every stored byte of every shard has passed its checksum (``threads`` shards at a
    time) and each shard holds exactly the usable videos the manifest assigns to it."""
    verification = verify_shards(shard_paths, threads)
    # every damaged shard, video and frame in one error, so that one rebuild fixes them all
    verification.raise_on_damage()
    log.info("verified: %s", verification.summary())
    rows = read_manifest(manifest_path)
    expected: dict[str, set[str]] = {}
    for row in rows:
        if row.ok:
            expected.setdefault(row.shard, set()).add(row.video_id)
    table = []
    for path in map(Path, shard_paths):
        with ShardReader(path) as reader:
            shard = str(reader.attrs["shard"])
            stored = set(reader.video_ids)
            if stored != expected.get(shard, set()):
                missing = sorted(expected.get(shard, set()) - stored)[:5]
                extra = sorted(stored - expected.get(shard, set()))[:5]
                raise ValueError(f"{path}: videos differ from the manifest (missing {missing}, unexpected {extra})")
            frames = sum(reader.num_frames(video_id) for video_id in stored)
            table.append((reader.view, shard, len(stored), frames, path.stat().st_size, str(path)))
    excluded = sum(not row.ok for row in rows)
    with open(out_path, "w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(("view", "shard", "videos", "frames", "bytes", "path"))
        writer.writerows(sorted(table))
    log.info("%d shards indexed; %d of %d listed videos excluded (see excluded.tsv)", len(table), excluded, len(rows))
