"""The flow stage: optical flow between consecutive stored RGB frames.

Flow is computed from the rgb shard, not from the video again, so it is aligned by
index with the stored frames by construction: flow ``t`` is the motion from frame ``t``
to frame ``t + 1`` (a video of T frames has T - 1 flow fields).
"""
from __future__ import annotations

import logging
from concurrent.futures import ProcessPoolExecutor
from functools import partial

import cv2
import numpy as np

import cocon
from cocon.data.shards import ShardReader, ShardWriter

log = logging.getLogger(__name__)


def make_flow_estimator(settings: dict):
    """A callable (gray_prev, gray_next) -> float32 flow ``[H, W, 2]`` for the configured method."""
    if settings["method"] == "tvl1":
        p = settings["tvl1"]
        tvl1 = cv2.optflow.DualTVL1OpticalFlow_create(
            tau=p["tau"], lambda_=p["lambda"], theta=p["theta"], nscales=p["nscales"], warps=p["warps"],
            epsilon=p["epsilon"], innnerIterations=p["inner_iterations"], outerIterations=p["outer_iterations"],
            scaleStep=p["scale_step"], gamma=p["gamma"], medianFiltering=p["median_filtering"],
        )
        return lambda prev, nxt: tvl1.calc(prev, nxt, None)
    p = settings["farneback"]
    return lambda prev, nxt: cv2.calcOpticalFlowFarneback(
        prev, nxt, None, p["pyr_scale"], p["levels"], p["winsize"], p["iterations"], p["poly_n"], p["poly_sigma"], 0
    )


def quantize_flow(flow: np.ndarray, bound: float) -> np.ndarray:
    """Clip to +-bound and map linearly to 0..255 (the TSN/DPC convention); 127.5 is zero motion."""
    scaled = (np.clip(flow, -bound, bound) + bound) * (255.0 / (2 * bound))
    return np.round(scaled).astype(np.uint8)


def dequantize_flow(quantized: np.ndarray, bound: float) -> np.ndarray:
    return quantized.astype(np.float32) * (2 * bound / 255.0) - bound


def to_gray(frames_rgb: np.ndarray) -> list[np.ndarray]:
    return [cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in frames_rgb]


def compute_flow(frames_rgb: np.ndarray, settings: dict) -> np.ndarray:
    """Quantized flow ``[T-1, H, W, 2]`` (uint8) of RGB frames ``[T, H, W, 3]``."""
    estimate = make_flow_estimator(settings)
    gray = to_gray(frames_rgb)
    height, width = gray[0].shape
    out = np.empty((max(len(gray) - 1, 0), height, width, 2), dtype=np.uint8)
    for index in range(len(gray) - 1):
        out[index] = quantize_flow(estimate(gray[index], gray[index + 1]), settings["bound"])
    return out


def _flow_of_video(rgb_path: str, settings: dict, video_id: str) -> np.ndarray:
    # one OpenCV thread per process: the processes already fill the cores
    cv2.setNumThreads(1)
    with ShardReader(rgb_path, view="rgb") as reader:
        frames = reader.read(video_id)
    return compute_flow(frames, settings)


def extract_flow(dataset: dict, rgb_path, out_path, threads: int = 1) -> int:
    """Write the flow shard ``out_path`` from the rgb shard ``rgb_path``, videos in parallel."""
    settings = dataset["flow"]
    with ShardReader(rgb_path, view="rgb") as reader:
        video_ids = reader.video_ids
        video_attrs = {video_id: reader.video_attrs(video_id) for video_id in video_ids}
        shard_attrs = reader.attrs
    attrs = {"dataset": dataset["name"], "shard": shard_attrs["shard"], "cocon_version": cocon.__version__,
             "method": settings["method"], "bound": settings["bound"],
             "parameters": repr(settings[settings["method"]])}
    compression = {"gzip": dict(compression="gzip", compression_opts=4, shuffle=True),
                   "lzf": dict(compression="lzf", shuffle=True), "none": {}}[settings["compression"]]
    work = partial(_flow_of_video, str(rgb_path), settings)
    log.info("shard %s: %s flow for %d videos with %d processes", attrs["shard"], settings["method"],
             len(video_ids), threads)
    with ShardWriter(out_path, "flow", attrs) as writer:
        if threads > 1:
            with ProcessPoolExecutor(threads) as pool:
                results = pool.map(work, video_ids)
                for video_id, flow in zip(video_ids, results):
                    _add_flow(writer, video_id, flow, video_attrs[video_id], compression)
        else:
            for video_id in video_ids:
                _add_flow(writer, video_id, work(video_id), video_attrs[video_id], compression)
    return len(video_ids)


def _add_flow(writer: ShardWriter, video_id: str, flow: np.ndarray, rgb_attrs: dict, compression: dict) -> None:
    attrs = {key: rgb_attrs[key] for key in ("label", "label_index", "fps", "orig_width", "orig_height",
                                              "width", "height", "source_path")}
    attrs["num_frames"] = rgb_attrs["num_frames"]
    chunks = (1, *flow.shape[1:]) if len(flow) else None
    writer.add_video(video_id, flow, attrs, chunks=chunks, **(compression if len(flow) else {}))
