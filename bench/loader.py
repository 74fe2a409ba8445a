"""Training clips per second of one loader process: our HDF5 shards against the DPC
layout (one JPEG file per frame in a folder per video) holding the same JPEG bytes,
with the same sampling, augmentation and normalisation. Prints JSON."""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from cocon.data.clips import ClipDataset, ClipSpec, augment, normalize, sample_seed, to_view_tensor, \
    usable_frames, window_indices
from cocon.data.manifest import read_manifest
from cocon.data.clips import VideoRef
from cocon.data.shards import ShardReader


class JpegFolderClips(torch.utils.data.Dataset):
    """The DPC layout: <root>/<video>/image_00001.jpg ...; same windows and augmentation."""

    def __init__(self, root: Path, videos: list[VideoRef], spec: ClipSpec, size: int, seed: int = 0):
        self.root, self.videos, self.spec, self.size, self.seed = root, videos, spec, size, seed

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, key):
        epoch, item = key
        video = self.videos[item]
        generator = torch.Generator().manual_seed(sample_seed(self.seed, epoch, item))
        room = usable_frames(video.num_frames) - self.spec.span
        start = int(torch.randint(0, room + 1, (), generator=generator)) if room > 0 else 0
        indices = window_indices(video.num_frames, self.spec, start)
        frames = np.stack([cv2.cvtColor(cv2.imread(str(self.root / video.video_id / f"image_{index + 1:05d}.jpg")),
                                        cv2.COLOR_BGR2RGB) for index in indices])
        return normalize("rgb", augment("rgb", to_view_tensor("rgb", frames), self.size, generator))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--views", default="results/demo/views", help="a views folder with rgb shards")
    parser.add_argument("--manifest", default="results/demo/manifest.tsv")
    parser.add_argument("--clips", type=int, default=40)
    args = parser.parse_args()
    if not Path(args.manifest).exists():
        raise SystemExit(f"{args.manifest}: run `make demo` (or point --manifest/--views at a dataset) first")
    torch.set_num_threads(1)
    rows = [row for row in read_manifest(args.manifest) if row.ok]
    videos = [VideoRef(row.video_id, row.shard, row.num_frames, row.label_index) for row in rows]
    spec = ClipSpec(8, 5, 3)
    shard_dataset = ClipDataset(videos, args.views, ["rgb"], {"rgb": 128}, spec, train=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for video in videos:
            (root / video.video_id).mkdir()
            with ShardReader(Path(args.views) / "rgb" / f"{video.shard}.h5") as reader:
                for index, data in enumerate(reader.read_raw(video.video_id)):
                    (root / video.video_id / f"image_{index + 1:05d}.jpg").write_bytes(data.tobytes())
        folder_dataset = JpegFolderClips(root, videos, spec, 128)
        keys = [(epoch, item) for epoch in range(args.clips // len(videos) + 1) for item in range(len(videos))]
        keys = keys[: args.clips]
        timings = {}
        for name, dataset in (("jpeg_folder", folder_dataset), ("hdf5_shards", shard_dataset)):
            dataset[keys[0]]  # warm caches and open files
            start = time.perf_counter()
            for key in keys:
                dataset[key]
            timings[name] = len(keys) / (time.perf_counter() - start)
    print(json.dumps({"benchmark": "loader", "videos": len(videos), "clips": len(keys),
                      "clip": "8 blocks x 5 frames, 1 in 3, 128 px rgb, DPC augmentation",
                      "jpeg_folder_clips_per_s": round(timings["jpeg_folder"], 2),
                      "hdf5_shards_clips_per_s": round(timings["hdf5_shards"], 2),
                      "ratio_shards_to_folder": round(timings["hdf5_shards"] / timings["jpeg_folder"], 3)}, indent=2))


if __name__ == "__main__":
    main()
