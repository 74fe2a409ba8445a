"""The flow stage: optical flow between consecutive stored RGB frames.

Flow is computed from the rgb shard, not from the video again, so it is aligned by
index with the stored frames by construction: flow ``t`` is the motion from frame ``t``
to frame ``t + 1`` (a video of T frames has T - 1 flow fields).
"""
from __future__ import annotations

from functools import partial

import cv2
import numpy as np

from cocon.views.derive import derive_view


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


def extract_flow(dataset: dict, rgb_path, out_path, threads: int = 1) -> int:
    """Write the flow shard ``out_path`` from the rgb shard ``rgb_path``, videos in parallel."""
    settings = dataset["flow"]
    attrs = {"method": settings["method"], "bound": settings["bound"], "parameters": repr(settings[settings["method"]])}
    return derive_view("flow", rgb_path, out_path, partial(compute_flow, settings=settings), dataset["name"], attrs,
                       threads, settings["compression"])
