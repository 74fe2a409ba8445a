"""Frames and flow imported from trees other tools wrote (``frames.import``, ``flow.import``),
stored as ordinary rgb and flow view shards: the same format, checksums and attributes as
the frames and flow stages write, aligned by index with the frames they belong to.

Frames are stored at ``frames.short_side``: a tree image already at that size is stored as
its JPEG bytes unchanged, a larger or smaller one resized (``INTER_AREA``, as frames decoded
from a video) and encoded at ``frames.jpeg_quality``. Each rgb video records in
``first_frame`` which decoded frame of the video its frame 0 is (1 for TSN's trees, 0
otherwise), and the rgb shard's ``import_layout`` the tree it came from.

Flow is converted to this project's convention: decoded from the tree's quantisation
(``f = q * 2b / 255 - b``, or per-flow min-max), rescaled from pixels of the size it was
computed at to pixels of the stored frames (u by the width ratio, v by the height ratio),
resized to ``flow.short_side`` with its values kept, clipped to ``flow.bound`` and
quantised ``round((f + bound) * 255 / (2 bound))``. Where the tree's bound, size and ours
agree, the stored values are the tree's own. The log counts, per video, the values at the
tree's bound (0 or 255: at or beyond it, their true size unknown) and those our bound clips.
"""
from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

import cv2
import numpy as np

import cocon
from cocon.data.manifest import read_manifest
from cocon.data.shards import ShardReader, ShardWriter, encode_jpeg
from cocon.data.trees import MINMAX, THREE_CHANNEL_FLOW, align_flows, flow_series, frame_series, import_bound
from cocon.data.video import resized_size
from cocon.parallel import process_pool
from cocon.views import derive
from cocon.views.flow import quantize_flow, resize_flow

log = logging.getLogger(__name__)

TREE_CHANGED = "the tree changed since the manifest probed it: rerun the manifest (snakemake's --forcerun manifest)"


class TreeChangedError(ValueError):
    """An import tree no longer matches what the manifest found in it."""


def import_frames(dataset: dict, manifest_path, shard: str, out_path) -> int:
    """Write the rgb shard ``shard`` from the ``frames.import`` tree; returns its video count."""
    settings = dataset["frames"]
    tree = settings["import"]
    rows = [row for row in read_manifest(manifest_path) if row.shard == shard]
    usable = [row for row in rows if row.ok]
    log.info("shard %s: %d videos, %d usable, frames from the %s tree %s", shard, len(rows), len(usable),
             tree["layout"], tree["root"])
    attrs = {"dataset": dataset["name"], "shard": shard, "cocon_version": cocon.__version__,
             "short_side": settings["short_side"], "jpeg_quality": settings["jpeg_quality"],
             "import_layout": tree["layout"], "import_root": str(tree["root"])}
    kept = 0
    with ShardWriter(out_path, "rgb", attrs) as writer:
        for row in usable:
            series = frame_series(tree, row.video_id, row.label)
            if isinstance(series, str) or series.count != row.num_frames:
                found = series if isinstance(series, str) else f"{series.count} frames"
                raise TreeChangedError(f"{row.video_id}: {found}, where the manifest found {row.num_frames} usable "
                                   f"frames: {TREE_CHANGED}")
            encoded, size, kept_bytes = [], (0, 0), True
            for data, name in zip(series.read(), series.names):
                frame = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
                if frame is None:
                    raise TreeChangedError(f"{series.where}: {name} does not decode: {TREE_CHANGED}")
                height, width = frame.shape[:2]
                size = resized_size(width, height, settings["short_side"])
                if size == (width, height):
                    encoded.append(data)
                else:
                    kept_bytes = False
                    encoded.append(encode_jpeg(cv2.resize(frame, size, interpolation=cv2.INTER_AREA),
                                               settings["jpeg_quality"]))
            kept += kept_bytes
            writer.add_video(row.video_id, encoded, {
                "label": row.label, "label_index": row.label_index, "fps": row.fps,
                "num_frames": len(encoded), "orig_width": row.width, "orig_height": row.height,
                "width": size[0], "height": size[1], "source_path": series.where, "first_frame": series.first,
            })
    log.info("shard %s: %d videos stored with the tree's JPEG bytes, %d resized to short side %d and re-encoded "
             "at quality %d", shard, kept, len(usable) - kept, settings["short_side"], settings["jpeg_quality"])
    return len(usable)


def decode_flow_image(encoded: tuple[bytes, ...], layout: str, name: str) -> np.ndarray:
    """uint8 ``[H, W, 2]`` (u, v) of one tree flow: two grey JPEGs, or one 3-channel JPEG
    holding u and v in OpenCV's channels 0 and 1 (MemDPC writes ``flow_img[:, :, 0:2] = flow``)."""
    if layout in THREE_CHANNEL_FLOW:
        image = cv2.imdecode(np.frombuffer(encoded[0], np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise TreeChangedError(f"{name} does not decode: {TREE_CHANGED}")
        return np.ascontiguousarray(image[..., :2])
    planes = [cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE) for data in encoded]
    if any(plane is None for plane in planes):
        raise TreeChangedError(f"{name} does not decode: {TREE_CHANGED}")
    return np.stack(planes, axis=-1)


def convert_flow(quantized: np.ndarray, tree_bound, minmax: np.ndarray | None, frame_size: tuple[int, int],
                 stored_size: tuple[int, int], bound: float) -> tuple[np.ndarray, int, int]:
    """One tree flow (uint8 ``[h, w, 2]``) in this project's convention: uint8 ``[H', W', 2]`` of
    size ``stored_size`` (W', H'), in pixels of frames of ``frame_size`` (W, H), over ``bound``.

    ``tree_bound`` is the tree's fixed bound, or ``minmax`` with ``minmax`` its (min_u, max_u,
    min_v, max_v). Returns the flow, how many of the tree's values sit at its bound (0 or 255:
    at or beyond it) and how many our bound clips."""
    height, width = quantized.shape[:2]
    at_tree_bound = 0 if minmax is not None else int(np.count_nonzero((quantized == 0) | (quantized == 255)))
    same_size = (width, height) == tuple(frame_size) == tuple(stored_size)
    if minmax is None and same_size and float(tree_bound) == float(bound):
        # the tree's values are ours already: 0 and 255 are +-bound, as our quantisation writes them
        return quantized.copy(), at_tree_bound, 0
    if minmax is not None:
        low = np.array([minmax[0], minmax[2]], np.float32)
        high = np.array([minmax[1], minmax[3]], np.float32)
        flow = low + quantized.astype(np.float32) * ((high - low) / 255.0)
    else:
        flow = quantized.astype(np.float32) * np.float32(2 * tree_bound / 255.0) - np.float32(tree_bound)
    flow[..., 0] *= frame_size[0] / width
    flow[..., 1] *= frame_size[1] / height
    clipped = int(np.count_nonzero(np.abs(flow) > bound))
    return quantize_flow(resize_flow(flow, *stored_size), bound), at_tree_bound, clipped


def _import_video_flow(tree: dict, settings: dict, frames_layout: str | None, item: tuple[str, dict]):
    """The flow of one video of an rgb shard from the tree: (uint8 [T-1, h, w, 2], a log line)."""
    cv2.setNumThreads(1)
    video_id, attrs = item
    frames, first = int(attrs["num_frames"]), int(attrs.get("first_frame", 0))
    series = flow_series(tree, video_id, str(attrs["label"]))
    alignment = series if isinstance(series, str) else align_flows(series, first, frames, frames_layout)
    if isinstance(alignment, str):
        raise TreeChangedError(f"{video_id}: {alignment}: {TREE_CHANGED}")
    tree_bound = import_bound(tree)
    minmax = series.read_minmax() if tree_bound == MINMAX else None
    frame_size = (int(attrs["width"]), int(attrs["height"]))
    short_side = settings.get("short_side")
    stored_size = resized_size(*frame_size, short_side) if short_side else frame_size
    count = max(frames - 1, 0)
    out = np.empty((count, stored_size[1], stored_size[0], 2), dtype=np.uint8)
    encoded = series.read()[alignment.skip:alignment.skip + count]
    at_tree_bound = clipped = values = 0
    tree_size = None
    for index, images in enumerate(encoded):
        quantized = decode_flow_image(images, series.layout, f"{series.where}: {series.names[alignment.skip + index]}")
        tree_size = quantized.shape[1], quantized.shape[0]
        out[index], at_bound, beyond = convert_flow(
            quantized, tree_bound, None if minmax is None else minmax[alignment.skip + index], frame_size,
            stored_size, settings["bound"])
        at_tree_bound, clipped, values = at_tree_bound + at_bound, clipped + beyond, values + quantized.size
    share = (lambda number: f"{100 * number / values:.2f}%") if values else (lambda number: "0%")
    line = (f"{video_id}: {count} flows from {series.where}" + (f" ({tree_size[0]}x{tree_size[1]})" if tree_size else "")
            + f" stored at {stored_size[0]}x{stored_size[1]} in pixels of the {frame_size[0]}x{frame_size[1]} frames; "
            + (f"{share(at_tree_bound)} of values ({at_tree_bound}) at the tree's bound +-{tree_bound} px (0 or 255: at "
               "or beyond it, their true size unknown); " if tree_bound != MINMAX else "min-max per flow; ")
            + f"{share(clipped)} ({clipped}) beyond +-{settings['bound']} px clipped")
    if alignment.dropped:
        line += f"; not imported: {', '.join(alignment.dropped)}"
    return out, line


def import_flow(dataset: dict, rgb_path, out_path, threads: int = 1) -> int:
    """Write the flow shard ``out_path`` for the videos of the rgb shard ``rgb_path`` from the
    ``flow.import`` tree, videos in ``threads`` processes; returns the video count."""
    settings = dataset["flow"]
    tree = settings["import"]
    with ShardReader(rgb_path, view="rgb") as reader:
        video_ids = reader.video_ids
        video_attrs = {video_id: reader.video_attrs(video_id) for video_id in video_ids}
        rgb_attrs = reader.attrs
    shard = str(rgb_attrs["shard"])
    frames_layout = rgb_attrs.get("import_layout")
    computed = rgb_attrs.get("short_side")
    attrs = {"dataset": dataset["name"], "shard": shard, "cocon_version": cocon.__version__,
             "method": "imported", "bound": settings["bound"], "parameters": repr(tree),
             "import_layout": tree["layout"], "import_root": str(tree["root"]),
             "import_bound": str(import_bound(tree))}
    if computed is not None:
        # the unit of the values: pixels of the stored frames, as the flow stage's
        attrs["computed_short_side"] = int(computed)
        attrs["short_side"] = settings.get("short_side") or int(computed)
    log.info("shard %s: flow of %d videos from the %s tree %s (bound %s), %d processes", shard, len(video_ids),
             tree["layout"], tree["root"], import_bound(tree), threads)
    work = partial(_import_video_flow, tree, settings, frames_layout)
    items = [(video_id, video_attrs[video_id]) for video_id in video_ids]
    with ShardWriter(out_path, "flow", attrs) as writer:
        if threads > 1 and len(items) > 1:
            with process_pool(threads) as pool:
                results = list(pool.map(work, items))
        else:
            results = [work(item) for item in items]
        for video_id, (flow, line) in zip(video_ids, results):
            log.info("%s", line)
            derive._add(writer, video_id, flow, video_attrs[video_id], settings["compression"])
    return len(video_ids)


def import_views(dataset: dict, out_dir, threads: int = 1) -> dict:
    """What the workflow's manifest, frames and flow rules do for an imported dataset, without
    Snakemake: ``out_dir``/manifest.tsv, excluded.tsv and views/{rgb,flow}/<shard>.h5 (flow
    when it is one of the dataset's views). Returns counts for a summary."""
    from cocon.data.manifest import run_manifest
    from cocon.views.flow import extract_flow
    from cocon.views.frames import extract_frames

    out_dir = Path(out_dir)
    rows = run_manifest(dataset, out_dir / "manifest.tsv", out_dir / "excluded.tsv", threads)
    shards = sorted({row.shard for row in rows})
    for shard in shards:
        rgb = out_dir / "views" / "rgb" / f"{shard}.h5"
        extract_frames(dataset, out_dir / "manifest.tsv", shard, rgb)
        if "flow" in dataset["views"]:
            extract_flow(dataset, rgb, out_dir / "views" / "flow" / f"{shard}.h5", threads)
    return {"videos": len(rows), "usable": sum(row.ok for row in rows), "shards": len(shards)}
