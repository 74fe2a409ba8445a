"""Contact sheets: a video's views side by side, to check the shards by eye.

Each row is one frame: the RGB frame with the person mask tinted and the COCO skeleton
read back from the pose heatmaps, the flow as colour (hue = direction, brightness =
magnitude), the pose heatmaps (max over keypoints) and the mask.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from cocon.data.manifest import read_manifest
from cocon.data.shards import ShardReader
from cocon.views.flow import dequantize_flow

COCO_SKELETON = ((0, 1), (0, 2), (1, 3), (2, 4), (5, 6), (5, 7), (7, 9), (6, 8), (8, 10), (5, 11), (6, 12),
                 (11, 12), (11, 13), (13, 15), (12, 14), (14, 16))
PEAK_THRESHOLD = 128  # a keypoint is drawn where its heatmap peak says confidence > 0.5


def flow_to_color(flow_uv: np.ndarray, bound: float) -> np.ndarray:
    """float flow ``[H, W, 2]`` to an RGB image; full brightness at ``bound / 2`` pixels."""
    magnitude, angle = cv2.cartToPolar(flow_uv[..., 0], flow_uv[..., 1], angleInDegrees=True)
    hsv = np.zeros((*flow_uv.shape[:2], 3), dtype=np.uint8)
    hsv[..., 0] = (angle / 2).astype(np.uint8)
    hsv[..., 1] = 255
    hsv[..., 2] = np.clip(magnitude * (2 * 255 / bound), 0, 255).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def keypoints_from_heatmaps(heatmaps: np.ndarray, height: int, width: int) -> list[tuple[int, int] | None]:
    """Peak of each ``[17, h, w]`` heatmap in frame pixels, or None where it is below threshold."""
    points = []
    scale_y, scale_x = height / heatmaps.shape[1], width / heatmaps.shape[2]
    for heatmap in heatmaps:
        y, x = np.unravel_index(int(heatmap.argmax()), heatmap.shape)
        confident = heatmap[y, x] >= PEAK_THRESHOLD
        points.append((int((x + 0.5) * scale_x), int((y + 0.5) * scale_y)) if confident else None)
    return points


def overlay(frame: np.ndarray, mask: np.ndarray | None, heatmaps: np.ndarray | None) -> np.ndarray:
    out = frame.copy()
    height, width = frame.shape[:2]
    if mask is not None:
        alpha = cv2.resize(mask, (width, height)).astype(np.float32)[..., None] / 255 * 0.5
        out = (out * (1 - alpha) + np.array([0, 255, 255], np.float32) * alpha).astype(np.uint8)
    if heatmaps is not None:
        points = keypoints_from_heatmaps(heatmaps, height, width)
        for a, b in COCO_SKELETON:
            if points[a] and points[b]:
                cv2.line(out, points[a], points[b], (255, 64, 64), 1, cv2.LINE_AA)
        for point in filter(None, points):
            cv2.circle(out, point, 2, (255, 255, 0), -1, cv2.LINE_AA)
    return out


def gray_to_rgb(image: np.ndarray, height: int, width: int) -> np.ndarray:
    resized = cv2.resize(image, (width, height), interpolation=cv2.INTER_NEAREST)
    return cv2.applyColorMap(resized, cv2.COLORMAP_INFERNO)[..., ::-1]


def _open_views(views_dir, manifest_path, video_id: str) -> dict[str, ShardReader]:
    row = next((r for r in read_manifest(manifest_path) if r.video_id == video_id), None)
    if row is None:
        raise ValueError(f"{manifest_path}: no video {video_id!r}")
    if not row.ok:
        raise ValueError(f"{video_id} was excluded by the manifest: {row.status}")
    readers = {}
    for view in ("rgb", "flow", "pose", "seg"):
        path = Path(views_dir) / view / f"{row.shard}.h5"
        if path.exists():
            readers[view] = ShardReader(path, view=view)
    if "rgb" not in readers:
        for reader in readers.values():
            reader.close()
        raise ValueError(f"{Path(views_dir) / 'rgb' / (row.shard + '.h5')}: the rgb shard is needed for a contact sheet")
    return readers


def _decoded_range(readers: dict[str, ShardReader], video_id: str) -> tuple[int, int]:
    """The decoded frames of the video that the shards hold, first to last (an import from a
    TSN tree starts at decoded frame 1)."""
    first = int(readers["rgb"].video_attrs(video_id).get("first_frame", 0))
    return first, first + readers["rgb"].num_frames(video_id) - 1


def _rows(readers: dict[str, ShardReader], video_id: str, indices) -> np.ndarray:
    """One row of tiles per stored frame index: rgb with mask and skeleton, flow, pose, seg."""
    lines = []
    for index in indices:
        frame = readers["rgb"].read(video_id, index, index + 1)[0]
        height, width = frame.shape[:2]
        pose = readers["pose"].read(video_id, index, index + 1)[0] if "pose" in readers else None
        mask = readers["seg"].read(video_id, index, index + 1)[0] if "seg" in readers else None
        tiles = [overlay(frame, mask, pose)]
        if "flow" in readers:
            bound = float(readers["flow"].attrs["bound"])
            flow = dequantize_flow(readers["flow"].read(video_id, index, index + 1)[0], bound)
            # flow may be stored smaller than the frames (flow.short_side): show it at their size
            tiles.append(cv2.resize(flow_to_color(flow, bound), (width, height), interpolation=cv2.INTER_NEAREST))
        if pose is not None:
            tiles.append(gray_to_rgb(pose.max(axis=0), height, width))
        if mask is not None:
            tiles.append(gray_to_rgb(mask, height, width))
        lines.append(np.concatenate([np.pad(tile, ((1, 1), (1, 1), (0, 0))) for tile in tiles], axis=1))
    return np.concatenate(lines, axis=0)


def _titled(sheet: np.ndarray, title: str, height: int) -> np.ndarray:
    """``sheet`` scaled to ``height`` rows of pixels under a white strip naming it."""
    if sheet.shape[0] != height:
        width = max(1, round(sheet.shape[1] * height / sheet.shape[0]))
        sheet = cv2.resize(sheet, (width, height), interpolation=cv2.INTER_AREA)
    strip = np.full((18, sheet.shape[1], 3), 255, np.uint8)
    cv2.putText(strip, title, (3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([strip, sheet], axis=0)


def contact_sheet(views_dir, manifest_path, video_id: str, out_path, rows: int = 6, beside=None,
                  titles: tuple[str, str] | None = None) -> Path:
    """Render ``rows`` evenly spaced frames of ``video_id`` from every view shard found.

    ``beside`` (views folder, manifest) names a second set of shards of the same video, e.g.
    imported frames and flow beside computed ones: drawn to its right at the same decoded
    frames of the video, so that a frame or flow off by one shows as a mismatch of the rows."""
    readers = _open_views(views_dir, manifest_path, video_id)
    other = {}
    try:
        if beside is None:
            total = readers["rgb"].num_frames(video_id)
            sheet = _rows(readers, video_id, np.linspace(0, total - 2, rows).round().astype(int))
        else:
            other = _open_views(*beside, video_id)
            (first, last), (other_first, other_last) = (_decoded_range(readers, video_id),
                                                         _decoded_range(other, video_id))
            low, high = max(first, other_first), min(last, other_last) - 1
            if high < low:
                raise ValueError(f"{video_id}: the two sets of shards hold no common decoded frames "
                                 f"({first}..{last} and {other_first}..{other_last})")
            decoded = np.linspace(low, high, rows).round().astype(int)
            left, right = _rows(readers, video_id, decoded - first), _rows(other, video_id, decoded - other_first)
            names = titles or (str(views_dir), str(beside[0]))
            gap = np.full((left.shape[0] + 18, 6, 3), 255, np.uint8)
            sheet = np.concatenate([_titled(left, names[0], left.shape[0]), gap,
                                    _titled(right, names[1], left.shape[0])], axis=1)
    finally:
        for reader in (*readers.values(), *other.values()):
            reader.close()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out_path), sheet[..., ::-1]):
        raise ValueError(f"{out_path}: could not write the PNG")
    return out_path
