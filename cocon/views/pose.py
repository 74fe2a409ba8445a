"""The pose stage: 17 COCO keypoint confidence heatmaps per frame from an off-the-shelf model.

Each heatmap is a Gaussian at the detected keypoint scaled by the model's confidence
in it, and zero where no person is found. Backends:

- ``mediapipe`` (default): MediaPipe Pose (BlazePose, ``model_complexity=1``, the model
  that ships inside the wheel), one person per frame, tracked through the video. Its 33
  landmarks map to COCO by name (``MEDIAPIPE_TO_COCO``); the confidence is the landmark's
  ``visibility`` (its ``presence`` is always 0 in this API), and joints that MediaPipe
  places outside the frame get none. A fresh model per video: a reused one carries its
  smoothing state into the next video. The person detector runs only when the tracker
  loses the person (tracking confidence below ``min_tracking_confidence``, 0.2): the
  tracker holds a person more steadily than the detector finds one, so at MediaPipe's
  0.5 the rate swung with the frames' resolution and JPEG (bench/pose_resolution.py).
- ``mmpose``: any top-down mmpose model with 17 COCO keypoints, from the config and
  checkpoint files the user names; the whole frame is the person box.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import numpy as np

from cocon.config import ConfigError
from cocon.views.derive import derive_view

COCO_KEYPOINTS = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)
# index of each COCO keypoint among MediaPipe Pose's 33 landmarks (same names there)
MEDIAPIPE_TO_COCO = (0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)


# the default of pose.min_tracking_confidence, which seg's pose-model masks use too (0.5 is MediaPipe's own)
DEFAULT_MIN_TRACKING_CONFIDENCE = 0.2


def view_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(height, width) of a view stored at ``short_side``, with the frame's aspect ratio."""
    if height <= width:
        return short_side, max(1, round(width * short_side / height))
    return max(1, round(height * short_side / width)), short_side


class MediaPipePose:
    """MediaPipe Pose, one instance per video: it tracks the person from frame to frame."""

    def __init__(self, settings: dict):
        from mediapipe.python.solutions.pose import Pose

        # min_tracking_confidence: below it MediaPipe drops the tracked person and reruns its person
        # detector; the detector finds fewer people than the tracker keeps and flips with tiny changes
        # of the frame (resize, JPEG), so a low threshold keeps the rate stable across resolutions
        self._pose = Pose(static_image_mode=False, model_complexity=1, smooth_landmarks=True,
                          min_detection_confidence=settings["min_detection_confidence"],
                          min_tracking_confidence=settings["min_tracking_confidence"])

    def keypoints(self, frame_rgb: np.ndarray) -> np.ndarray:
        """``[17, 3]``: x and y as fractions of the frame width and height, and the confidence."""
        result = self._pose.process(frame_rgb)
        out = np.zeros((len(COCO_KEYPOINTS), 3), dtype=np.float32)
        if result.pose_landmarks is not None:
            landmarks = result.pose_landmarks.landmark
            for row, index in enumerate(MEDIAPIPE_TO_COCO):
                out[row] = landmarks[index].x, landmarks[index].y, landmarks[index].visibility
        # MediaPipe extrapolates joints outside the frame; they are not seen, so they get no heatmap
        outside = (out[:, 0] < 0) | (out[:, 0] > 1) | (out[:, 1] < 0) | (out[:, 1] > 1)
        out[outside, 2] = 0
        return out

    def close(self) -> None:
        self._pose.close()


@contextmanager
def full_checkpoint_loading():
    """Let mmengine's ``torch.load`` read a whole mm checkpoint, as it did before torch 2.6.

    mmengine 0.10 calls ``torch.load`` without ``weights_only``, which defaults to True since
    torch 2.6 and then refuses the numpy arrays in the ``meta`` of every OpenMMLab 1.x
    checkpoint (mmengine issue 1655). The user names the file, so it is trusted as before.
    """
    previous = os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        if previous is None:
            del os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"]
        else:
            os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = previous


class MMPose:
    """A top-down mmpose model; the whole frame is the person box (one person per frame)."""

    def __init__(self, settings: dict):
        from mmpose.apis import init_model

        mm = settings["mmpose"]
        with full_checkpoint_loading():
            self._model = init_model(mm["config"], mm["checkpoint"], device=mm["device"])
        count = self._model.dataset_meta.get("num_keypoints")
        if count != len(COCO_KEYPOINTS):
            raise ConfigError(f"pose.mmpose.config: {mm['config']} predicts {count} keypoints, not the 17 of COCO")

    def keypoints(self, frame_rgb: np.ndarray) -> np.ndarray:
        from mmpose.apis import inference_topdown

        height, width = frame_rgb.shape[:2]
        result = inference_topdown(self._model, np.ascontiguousarray(frame_rgb[..., ::-1]))[0].pred_instances
        out = np.zeros((len(COCO_KEYPOINTS), 3), dtype=np.float32)
        out[:, 0] = result.keypoints[0][:, 0] / width
        out[:, 1] = result.keypoints[0][:, 1] / height
        out[:, 2] = np.clip(result.keypoint_scores[0], 0, 1)
        return out

    def close(self) -> None:
        pass


BACKENDS = {"mediapipe": MediaPipePose, "mmpose": MMPose}


def backend_files(settings: dict, key: str) -> list[str]:
    """The model files an mm backend reads (none for mediapipe), checked before any job runs:
    a missing package or file is a ConfigError naming the key; nothing is ever downloaded."""
    backend = settings["backend"]
    if backend == "mediapipe":
        return []
    try:
        # the apis, not just the package: ``import mmpose`` succeeds without mmdet or mmcv's compiled ops
        __import__(f"{backend}.apis")
    except ImportError as error:
        raise ConfigError(f"{key}.backend: {backend} is selected but cannot be imported ({error}); "
                          "install it as the README's mmpose and mmsegmentation recipe says") from None
    paths = []
    for name in ("config", "checkpoint"):
        path = settings[backend].get(name)
        if not path:
            raise ConfigError(f"{key}.{backend}.{name}: required when {key}.backend is {backend}")
        if not Path(path).is_file():
            raise ConfigError(f"{key}.{backend}.{name}: file not found: {path}")
        paths.append(path)
    return paths


def render_heatmaps(keypoints: np.ndarray, height: int, width: int, sigma: float) -> np.ndarray:
    """``[17, height, width]`` float heatmaps: confidence * exp(-d^2 / 2 sigma^2) around each keypoint.

    Keypoints are in fractions of the frame, so heatmaps may be smaller than the frame;
    ``sigma`` is in heatmap pixels. A keypoint outside the frame leaves only its tail inside.
    """
    assert keypoints.shape == (len(COCO_KEYPOINTS), 3), keypoints.shape
    # pixel centres: a keypoint at fraction x sits at x * width - 0.5 in pixel-index units
    xs = np.arange(width, dtype=np.float32)[None, :] - (keypoints[:, :1] * width - 0.5)
    ys = np.arange(height, dtype=np.float32)[None, :] - (keypoints[:, 1:2] * height - 0.5)
    gauss_x = np.exp(-(xs ** 2) / (2 * sigma ** 2))
    gauss_y = np.exp(-(ys ** 2) / (2 * sigma ** 2))
    return keypoints[:, 2, None, None] * gauss_y[:, :, None] * gauss_x[:, None, :]


def to_uint8(confidence: np.ndarray) -> np.ndarray:
    return np.round(np.clip(confidence, 0, 1) * 255).astype(np.uint8)


def compute_pose(frames_rgb: np.ndarray, settings: dict) -> np.ndarray:
    """uint8 heatmaps ``[T, 17, h, w]`` of RGB frames ``[T, H, W, 3]`` (h, w at ``short_side``)."""
    height, width = view_size(frames_rgb.shape[1], frames_rgb.shape[2], settings["short_side"])
    out = np.zeros((len(frames_rgb), len(COCO_KEYPOINTS), height, width), dtype=np.uint8)
    model = BACKENDS[settings["backend"]](settings)
    try:
        for index, frame in enumerate(frames_rgb):
            out[index] = to_uint8(render_heatmaps(model.keypoints(frame), height, width, settings["sigma"]))
    finally:
        model.close()
    return out


def extract_pose(dataset: dict, rgb_path, out_path, threads: int = 1) -> int:
    """Write the pose shard ``out_path`` from the rgb shard ``rgb_path``."""
    settings = dataset["pose"]
    attrs = {"backend": settings["backend"], "keypoints": list(COCO_KEYPOINTS), "sigma": settings["sigma"],
             "short_side": settings["short_side"]}
    if settings["backend"] == "mmpose":
        attrs.update(config=settings["mmpose"]["config"], checkpoint=settings["mmpose"]["checkpoint"])
    return derive_view("pose", rgb_path, out_path, partial(compute_pose, settings=settings), dataset["name"], attrs,
                       threads, settings["compression"])
