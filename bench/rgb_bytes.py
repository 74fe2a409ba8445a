"""Bytes per stored RGB frame: our HDF5 shard against the DPC layout (one JPEG file per
frame in a folder), same frames, same JPEG quality. Prints JSON."""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from bench.common import source_clip
from cocon.data.shards import ShardWriter, encode_jpeg
from cocon.data.video import iter_frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--short-side", type=int, default=128)
    parser.add_argument("--quality", type=int, default=90)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        clip, source = source_clip(workdir)
        encoded = [encode_jpeg(frame, args.quality) for frame in iter_frames(clip, args.short_side)]
        folder = workdir / "jpg"
        folder.mkdir()
        for index, data in enumerate(encoded):
            (folder / f"image_{index + 1:05d}.jpg").write_bytes(data)
        shard = workdir / "rgb.h5"
        with ShardWriter(shard, "rgb", {"shard": "00000"}) as writer:
            writer.add_video("clip", encoded, {"num_frames": len(encoded)})
        files = list(folder.iterdir())
        jpeg_bytes = sum(path.stat().st_size for path in files)
        # what the files really occupy: whole file-system blocks each, plus a directory
        jpeg_disk = sum(path.stat().st_blocks * 512 for path in files) + folder.stat().st_blocks * 512
        shard_bytes = shard.stat().st_size
        shard_disk = shard.stat().st_blocks * 512
    frames = len(encoded)
    print(json.dumps({
        "benchmark": "rgb_bytes", "source": source, "frames": frames, "short_side": args.short_side,
        "jpeg_quality": args.quality,
        "jpeg_folder_bytes_per_frame": round(jpeg_bytes / frames, 1),
        "jpeg_folder_disk_bytes_per_frame": round(jpeg_disk / frames, 1),
        "shard_bytes_per_frame": round(shard_bytes / frames, 1),
        "shard_disk_bytes_per_frame": round(shard_disk / frames, 1),
        "shard_to_folder_ratio_bytes": round(shard_bytes / jpeg_bytes, 3),
        "shard_to_folder_ratio_disk": round(shard_disk / jpeg_disk, 3),
        "files_per_video": {"folder": frames, "shard": "1 per 100 videos"},
    }, indent=2))


if __name__ == "__main__":
    main()
