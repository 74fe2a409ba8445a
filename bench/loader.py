"""Training clips per second of one loader process: our HDF5 shards against the DPC
layout (one JPEG file per frame in a folder per video) holding the same JPEG bytes,
with the same sampling, augmentation and normalisation; and what the shards' checksums
cost: the same shards rewritten with the same chunks but no Fletcher-32 filter, read the
same way, and `cocon verify`'s throughput. Prints JSON."""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from functools import partial
from pathlib import Path

import cv2
import h5py
import numpy as np
import torch

from bench.common import best_time
from cocon.data.clips import ClipDataset, ClipSpec, augment, clip_tensor, normalize, sample_seed, \
    usable_frames, window_indices
from cocon.data.manifest import read_manifest
from cocon.data.clips import VideoRef
from cocon.data.shards import LIBVER, ShardReader, verify_shards


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
        return normalize("rgb", augment("rgb", clip_tensor("rgb", frames), self.size, generator))


def copy_without_checksums(source: Path, target: Path) -> None:
    """The rgb shard ``source`` with the same chunks but no Fletcher-32 filter: reading it
    differs from reading ``source`` only in the checksums HDF5 skips."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(source) as original, h5py.File(target, "w", libver=LIBVER) as copy:
        copy.attrs.update(original.attrs)
        for video_id, group in original["videos"].items():
            video = copy.create_group(f"videos/{video_id}")
            video.attrs.update(group.attrs)
            for name, dataset in group.items():
                video.create_dataset(name, data=dataset[()], chunks=dataset.chunks)


def fastest_interleaved(runs: dict, repeats: int) -> dict[str, float]:
    """The fastest of ``repeats`` timed calls of each run, in seconds, the runs taking turns
    so that a slow spell of the machine does not fall on one of them alone."""
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: min(measured) for name, measured in times.items()}


def load_clips(dataset, keys) -> None:
    for key in keys:
        dataset[key]


def window_reads(views: Path, videos: list[VideoRef], windows: list[np.ndarray]) -> None:
    """The stored bytes of each clip's window, as ClipDataset reads them, without decoding."""
    readers = {}
    for video, indices in zip(videos, windows):
        if video.shard not in readers:
            readers[video.shard] = ShardReader(views / "rgb" / f"{video.shard}.h5", view="rgb")
        readers[video.shard].read_raw(video.video_id, int(indices.min()), int(indices.max()) + 1)
    for reader in readers.values():
        reader.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--views", default="results/demo/views", help="a views folder with rgb shards")
    parser.add_argument("--manifest", default="results/demo/manifest.tsv")
    parser.add_argument("--clips", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each loader; the fastest counts")
    args = parser.parse_args()
    if not Path(args.manifest).exists():
        raise SystemExit(f"{args.manifest}: run `make demo` (or point --manifest/--views at a dataset) first")
    torch.set_num_threads(1)
    views = Path(args.views)
    rows = [row for row in read_manifest(args.manifest) if row.ok]
    videos = [VideoRef(row.video_id, row.shard, row.num_frames, row.label_index) for row in rows]
    spec = ClipSpec(8, 5, 3)
    keys = [(epoch, item) for epoch in range(args.clips // len(videos) + 1) for item in range(len(videos))]
    keys = keys[: args.clips]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "jpeg"
        unchecked = Path(tmp) / "unchecked"
        for shard in sorted({video.shard for video in videos}):
            copy_without_checksums(views / "rgb" / f"{shard}.h5", unchecked / "rgb" / f"{shard}.h5")
        for video in videos:
            (root / video.video_id).mkdir(parents=True)
            with ShardReader(views / "rgb" / f"{video.shard}.h5") as reader:
                for index, data in enumerate(reader.read_raw(video.video_id)):
                    (root / video.video_id / f"image_{index + 1:05d}.jpg").write_bytes(data.tobytes())
        loaders = {
            "jpeg_folder": JpegFolderClips(root, videos, spec, 128),
            "hdf5_shards": ClipDataset(videos, views, ["rgb"], {"rgb": 128}, spec, train=True),
            "hdf5_unchecked": ClipDataset(videos, unchecked, ["rgb"], {"rgb": 128}, spec, train=True),
        }
        for dataset in loaders.values():
            dataset[keys[0]]  # warm caches and open files
        seconds = fastest_interleaved({name: partial(load_clips, dataset, keys) for name, dataset in loaders.items()},
                                      args.repeats)
        clips_per_s = {name: len(keys) / seconds[name] for name in loaders}
        # the stored bytes of random windows alone, many of them: the checksum's own cost per clip
        generator = np.random.default_rng(0)
        clip_videos = [videos[item] for _, item in keys] * 10
        windows = [window_indices(video.num_frames, spec, int(generator.integers(
            0, max(usable_frames(video.num_frames) - spec.span, 0) + 1))) for video in clip_videos]
        seconds = fastest_interleaved({name: partial(window_reads, folder, clip_videos, windows)
                                       for name, folder in (("checked", views), ("unchecked", unchecked))},
                                      args.repeats)
        read_us = {name: 1e6 * seconds[name] / len(windows) for name in seconds}
    shards = sorted(views.rglob("*.h5"))
    verify_seconds = best_time(partial(verify_shards, shards), args.repeats)
    megabytes = sum(path.stat().st_size for path in shards) / 1e6
    print(json.dumps({"benchmark": "loader", "videos": len(videos), "clips": len(keys),
                      "clip": "8 blocks x 5 frames, 1 in 3, 128 px rgb, DPC augmentation",
                      "jpeg_folder_clips_per_s": round(clips_per_s["jpeg_folder"], 2),
                      "hdf5_shards_clips_per_s": round(clips_per_s["hdf5_shards"], 2),
                      "ratio_shards_to_folder": round(clips_per_s["hdf5_shards"] / clips_per_s["jpeg_folder"], 3),
                      "hdf5_unchecked_clips_per_s": round(clips_per_s["hdf5_unchecked"], 2),
                      "ratio_checked_to_unchecked": round(clips_per_s["hdf5_shards"] / clips_per_s["hdf5_unchecked"],
                                                          3),
                      "window_read_us_per_clip_checked": round(read_us["checked"], 1),
                      "window_read_us_per_clip_unchecked": round(read_us["unchecked"], 1),
                      "checksum_us_per_clip": round(read_us["checked"] - read_us["unchecked"], 1),
                      "checksum_share_of_clip_time": round((read_us["checked"] - read_us["unchecked"]) * 1e-6
                                                           * clips_per_s["hdf5_shards"], 4),
                      "verify_shards": len(shards), "verify_mb": round(megabytes, 1),
                      "verify_mb_per_s": round(megabytes / verify_seconds, 1)}, indent=2))


if __name__ == "__main__":
    main()
