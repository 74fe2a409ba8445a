"""The flow stage: optical flow between consecutive stored RGB frames.

Flow is computed from the rgb shard, not from the video again, so it is aligned by
index with the stored frames by construction: flow ``t`` is the motion from frame ``t``
to frame ``t + 1`` (a video of T frames has T - 1 flow fields).

Flow is always computed at the stored frames' resolution (TV-L1 loses small motions on
small frames). ``flow.short_side`` may then store it smaller: each field is resized
(``INTER_AREA``) to that short side with its values left as they are, in pixels of the
frames it was computed on, as DPC's flow JPEGs were rescaled like images. The shard's
``computed_short_side`` and ``short_side`` attributes say both sizes; ``bound`` is in
pixels of ``computed_short_side``.
"""
from __future__ import annotations

from functools import partial

import cv2
import numpy as np

import cocon
from cocon.data.shards import ShardReader, ShardWriter
from cocon.data.video import resized_size
from cocon.views import derive
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


def resize_flow(flow: np.ndarray, width: int, height: int) -> np.ndarray:
    """float flow ``[H, W, 2]`` resized like an image to ``width`` x ``height`` (``INTER_AREA``);
    the values are not rescaled: they stay in pixels of the frames the flow was computed on."""
    if flow.shape[:2] == (height, width):
        return flow
    return cv2.resize(flow, (width, height), interpolation=cv2.INTER_AREA)


def compute_flow(frames_rgb: np.ndarray, settings: dict) -> np.ndarray:
    """Quantized flow ``[T-1, h, w, 2]`` (uint8) of RGB frames ``[T, H, W, 3]``, computed at
    ``H x W`` and stored at ``settings["short_side"]`` (``h, w = H, W`` when it is None)."""
    estimate = make_flow_estimator(settings)
    gray = to_gray(frames_rgb)
    height, width = gray[0].shape if gray else (0, 0)
    short_side = settings.get("short_side")
    if short_side is not None and gray:
        width, height = resized_size(width, height, short_side)
    out = np.empty((max(len(gray) - 1, 0), height, width, 2), dtype=np.uint8)
    for index in range(len(gray) - 1):
        flow = resize_flow(estimate(gray[index], gray[index + 1]), width, height)
        out[index] = quantize_flow(flow, settings["bound"])
    return out


def frames_short_side(rgb_path) -> int | None:
    """The short side of the frames of an rgb shard: its ``short_side`` attribute (the frames
    stage writes it), else that of its first stored frame; None for an empty shard without it."""
    with ShardReader(rgb_path, view="rgb") as reader:
        if "short_side" in reader.attrs:
            return int(reader.attrs["short_side"])
        for video_id in reader.video_ids:
            first = reader.read(video_id, 0, 1)
            if len(first):
                return int(min(first.shape[1:3]))
    return None


def extract_flow(dataset: dict, rgb_path, out_path, threads: int = 1) -> int:
    """Write the flow shard ``out_path`` from the rgb shard ``rgb_path``: with ``flow.backend``
    opencv, videos in parallel processes; with torch, frame pairs batched across the shard's
    videos on ``flow.device``. Both write the same shard format. With ``flow.import`` set, the
    flow comes from that tree instead (cocon.views.imports)."""
    settings = dataset["flow"]
    if settings.get("import"):
        from cocon.views.imports import import_flow

        return import_flow(dataset, rgb_path, out_path, threads)
    attrs = {"method": settings["method"], "bound": settings["bound"], "parameters": repr(settings[settings["method"]])}
    # the unit of the stored values (pixels of the frames flow was computed on) and the stored size
    computed = frames_short_side(rgb_path)
    stored = settings.get("short_side") or computed
    if computed is not None:
        attrs["computed_short_side"] = computed
    if stored is not None:
        attrs["short_side"] = stored
    if settings["method"] == "tvl1" and settings.get("backend", "opencv") == "torch":
        attrs["backend"] = f"torch:{settings.get('device', 'cpu')}"
        return _extract_flow_torch(dataset, rgb_path, out_path, attrs, threads)
    return derive_view("flow", rgb_path, out_path, partial(compute_flow, settings=settings), dataset["name"], attrs,
                       threads, settings["compression"])


def _tvl1_params(p: dict) -> dict:
    return dict(tau=p["tau"], lambda_=p["lambda"], theta=p["theta"], nscales=p["nscales"], warps=p["warps"],
                epsilon=p["epsilon"], inner_iterations=p["inner_iterations"],
                outer_iterations=p["outer_iterations"], scale_step=p["scale_step"], gamma=p["gamma"],
                median_filtering=p["median_filtering"])


def torch_flow_pairs(first: list[np.ndarray], second: list[np.ndarray], settings: dict, device: str = "cpu"
                     ) -> np.ndarray:
    """float32 TV-L1 flow ``[N, H, W, 2]`` of grey pairs of one size, one batch on ``device``."""
    import torch

    from cocon.views.tvl1 import tvl1_flow

    a = torch.from_numpy(np.stack(first)).to(device=device, dtype=torch.float32)
    b = torch.from_numpy(np.stack(second)).to(device=device, dtype=torch.float32)
    flow = tvl1_flow(a, b, **_tvl1_params(settings["tvl1"]))
    return flow.permute(0, 2, 3, 1).cpu().numpy()


def _extract_flow_torch(dataset: dict, rgb_path, out_path, attrs: dict, threads: int = 1) -> int:
    """The torch backend: pairs of all videos, batched by frame size, ``batch_pairs`` at a time;
    videos written in the shard's order as soon as all their pairs are done."""
    import torch

    settings = dataset["flow"]
    device = settings.get("device", "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("flow.device is cuda, but torch sees no CUDA device here; set flow.device: cpu")
    if device == "cpu":
        torch.set_num_threads(max(1, int(threads)))
    batch_pairs = int(settings.get("batch_pairs", 16))
    bound = settings["bound"]
    short_side = settings.get("short_side")
    with ShardReader(rgb_path, view="rgb") as reader:
        video_ids = reader.video_ids
        video_attrs = {video_id: reader.video_attrs(video_id) for video_id in video_ids}
        shard = str(reader.attrs["shard"])
        shard_attrs = {"dataset": dataset["name"], "shard": shard, "cocon_version": cocon.__version__, **attrs}
        outputs: dict[str, np.ndarray] = {}
        remaining: dict[str, int] = {}
        buffers: dict[tuple, list] = {}  # frame size -> [(video, index, grey, next grey)]
        written = 0

        def run(size):
            batch = buffers.pop(size, [])
            if not batch:
                return
            flows = torch_flow_pairs([x[2] for x in batch], [x[3] for x in batch], settings, device)
            for (video_id, index, _, _), flow in zip(batch, flows):
                out = outputs[video_id]
                out[index] = quantize_flow(resize_flow(flow, out.shape[2], out.shape[1]), bound)
                remaining[video_id] -= 1

        with ShardWriter(out_path, "flow", shard_attrs) as writer:
            def flush():
                nonlocal written
                while written < len(video_ids) and remaining.get(video_ids[written], 1) == 0:
                    video_id = video_ids[written]
                    derive._add(writer, video_id, outputs.pop(video_id), video_attrs[video_id],
                                settings["compression"])
                    written += 1

            for video_id in video_ids:
                gray = to_gray(reader.read(video_id))
                height, width = gray[0].shape if gray else (0, 0)
                if short_side is not None and gray:
                    width, height = resized_size(width, height, short_side)
                outputs[video_id] = np.empty((max(len(gray) - 1, 0), height, width, 2), dtype=np.uint8)
                remaining[video_id] = max(len(gray) - 1, 0)
                for index in range(len(gray) - 1):
                    size = gray[index].shape
                    buffers.setdefault(size, []).append((video_id, index, gray[index], gray[index + 1]))
                    if len(buffers[size]) >= batch_pairs:
                        run(size)
                        flush()
                flush()
            for size in list(buffers):
                run(size)
            flush()
    return len(video_ids)
