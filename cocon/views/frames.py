"""The frames stage: decode each usable video of a shard and store its RGB frames as JPEG."""
from __future__ import annotations

import logging
from pathlib import Path

import cocon
from cocon.data.manifest import read_manifest
from cocon.data.shards import ShardWriter, encode_jpeg
from cocon.data.video import iter_frames

log = logging.getLogger(__name__)


def extract_frames(dataset: dict, manifest_path, shard: str, out_path) -> int:
    """Write ``out_path``, the rgb shard ``shard``; returns how many videos it holds. With
    ``frames.import`` set, the frames come from that tree instead (cocon.views.imports)."""
    settings = dataset["frames"]
    if settings.get("import"):
        from cocon.views.imports import import_frames

        return import_frames(dataset, manifest_path, shard, out_path)
    rows = [row for row in read_manifest(manifest_path) if row.shard == shard]
    usable = [row for row in rows if row.ok]
    log.info("shard %s: %d videos, %d usable", shard, len(rows), len(usable))
    attrs = {"dataset": dataset["name"], "shard": shard, "cocon_version": cocon.__version__,
             "short_side": settings["short_side"], "jpeg_quality": settings["jpeg_quality"]}
    with ShardWriter(out_path, "rgb", attrs) as writer:
        for row in usable:
            encoded, size = [], (0, 0)
            for frame in iter_frames(row.path, settings["short_side"]):
                size = frame.shape[1], frame.shape[0]
                encoded.append(encode_jpeg(frame, settings["jpeg_quality"]))
            if len(encoded) != row.num_frames:
                # the probe and this decode read the same file with the same decoder; a
                # difference means the file changed under us, so say so and keep what decoded
                log.warning("%s: %d frames decoded, the manifest says %d", row.path, len(encoded), row.num_frames)
            if not encoded:
                raise ValueError(f"{row.path}: no frame decodes now, although the manifest probe found {row.num_frames}")
            writer.add_video(row.video_id, encoded, {
                "label": row.label, "label_index": row.label_index, "fps": row.fps,
                "num_frames": len(encoded), "orig_width": row.width, "orig_height": row.height,
                "width": size[0], "height": size[1], "source_path": str(Path(row.path)),
            })
    return len(usable)
