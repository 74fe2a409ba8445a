"""Views derived from the stored RGB frames (flow, pose, seg): one shard in, one shard out.

Every derived view reads the frames of the rgb shard rather than the video, so index t
means the same moment in every view by construction.
"""
from __future__ import annotations

import logging
from cocon.parallel import process_pool
from functools import partial
from typing import Callable

import cv2
import numpy as np

import cocon
from cocon.data.shards import ShardReader, ShardWriter

log = logging.getLogger(__name__)

COMPRESSION = {
    "gzip": dict(compression="gzip", compression_opts=4, shuffle=True),
    "lzf": dict(compression="lzf", shuffle=True),
    "none": {},
}
# per-video attributes that every view shard repeats from the rgb shard
CARRIED_ATTRS = ("label", "label_index", "fps", "num_frames", "orig_width", "orig_height", "width", "height",
                 "source_path")


def _compute_video(rgb_path: str, compute: Callable[[np.ndarray], np.ndarray], video_id: str) -> np.ndarray:
    # one OpenCV thread per process: the processes already fill the cores
    cv2.setNumThreads(1)
    with ShardReader(rgb_path, view="rgb") as reader:
        frames = reader.read(video_id)
    return compute(frames)


def derive_view(view: str, rgb_path, out_path, compute: Callable[[np.ndarray], np.ndarray], dataset_name: str,
                attrs: dict, threads: int = 1, compression: str = "gzip") -> int:
    """Write ``out_path`` by applying ``compute`` (RGB frames ``[T, H, W, 3]`` -> array) to every
    video of the rgb shard ``rgb_path``, videos in ``threads`` processes; returns the video count.

    ``compute`` must be picklable (a module-level function or a partial of one). Damaged
    bytes in the rgb shard stop it with the reader's ShardError, which names the video and
    frames; the half-written output is removed.
    """
    with ShardReader(rgb_path, view="rgb") as reader:
        video_ids = reader.video_ids
        video_attrs = {video_id: reader.video_attrs(video_id) for video_id in video_ids}
        shard = str(reader.attrs["shard"])
    shard_attrs = {"dataset": dataset_name, "shard": shard, "cocon_version": cocon.__version__, **attrs}
    work = partial(_compute_video, str(rgb_path), compute)
    log.info("shard %s: %s view of %d videos with %d processes", shard, view, len(video_ids), threads)
    with ShardWriter(out_path, view, shard_attrs) as writer:
        if threads > 1:
            with process_pool(threads) as pool:
                results = zip(video_ids, pool.map(work, video_ids))
                for video_id, data in results:
                    _add(writer, video_id, data, video_attrs[video_id], compression)
        else:
            for video_id in video_ids:
                _add(writer, video_id, work(video_id), video_attrs[video_id], compression)
    return len(video_ids)


def _add(writer: ShardWriter, video_id: str, data: np.ndarray, rgb_attrs: dict, compression: str) -> None:
    # one chunk per frame: reading a clip decompresses and checksums its own frames only
    options = dict(chunks=(1, *data.shape[1:]), **COMPRESSION[compression])
    writer.add_video(video_id, data, {key: rgb_attrs[key] for key in CARRIED_ATTRS}, **options)
