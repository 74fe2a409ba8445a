"""The seg stage: one channel of person-segmentation confidence per frame.

Backends:

- ``mediapipe`` (default): MediaPipe's person segmenters, which ship inside the wheel;
  ``model`` picks ``selfie`` (SelfieSegmentation, general model), ``selfie_landscape``
  (its faster landscape model) or ``pose`` (the segmentation head of MediaPipe Pose,
  which follows the one person that pose tracks).
- ``mmseg``: any mmsegmentation model from the config and checkpoint files the user
  names; the confidence is the softmax probability of ``mmseg.person_class``.
"""
from __future__ import annotations

from functools import partial

import cv2
import numpy as np

from cocon.views.derive import derive_view
from cocon.views.pose import DEFAULT_MIN_TRACKING_CONFIDENCE, full_checkpoint_loading, to_uint8, view_size


class MediaPipeSegmenter:
    """One instance per video (the pose model tracks its person through the video)."""

    def __init__(self, settings: dict):
        from mediapipe.python.solutions.pose import Pose
        from mediapipe.python.solutions.selfie_segmentation import SelfieSegmentation

        self._model_name = settings["model"]
        if self._model_name == "pose":
            # the tracking threshold of the pose stage, so that both follow the same person
            self._model = Pose(static_image_mode=False, model_complexity=1, enable_segmentation=True,
                               min_tracking_confidence=DEFAULT_MIN_TRACKING_CONFIDENCE)
        else:
            self._model = SelfieSegmentation(model_selection=0 if self._model_name == "selfie" else 1)

    def mask(self, frame_rgb: np.ndarray) -> np.ndarray:
        """float32 ``[H, W]`` person confidence in [0, 1], at the frame's size."""
        result = self._model.process(frame_rgb)
        mask = result.segmentation_mask
        if mask is None:
            # the pose model found no person in this frame: nothing to segment
            return np.zeros(frame_rgb.shape[:2], dtype=np.float32)
        # a view into MediaPipe's buffer, which the next frame reuses
        return np.array(mask, dtype=np.float32)

    def close(self) -> None:
        self._model.close()


class MMSegmenter:
    def __init__(self, settings: dict):
        from mmseg.apis import init_model

        mm = settings["mmseg"]
        with full_checkpoint_loading():
            self._model = init_model(mm["config"], mm["checkpoint"], device=mm["device"])
        self._person = mm["person_class"]

    def mask(self, frame_rgb: np.ndarray) -> np.ndarray:
        import torch
        from mmseg.apis import inference_model

        logits = inference_model(self._model, np.ascontiguousarray(frame_rgb[..., ::-1])).seg_logits.data
        return torch.softmax(logits.float(), dim=0)[self._person].cpu().numpy()

    def close(self) -> None:
        pass


BACKENDS = {"mediapipe": MediaPipeSegmenter, "mmseg": MMSegmenter}


def compute_seg(frames_rgb: np.ndarray, settings: dict) -> np.ndarray:
    """uint8 masks ``[T, h, w]`` of RGB frames ``[T, H, W, 3]`` (h, w at ``short_side``)."""
    height, width = view_size(frames_rgb.shape[1], frames_rgb.shape[2], settings["short_side"])
    out = np.zeros((len(frames_rgb), height, width), dtype=np.uint8)
    model = BACKENDS[settings["backend"]](settings)
    try:
        for index, frame in enumerate(frames_rgb):
            mask = cv2.resize(model.mask(frame), (width, height), interpolation=cv2.INTER_AREA)
            out[index] = to_uint8(mask)
    finally:
        model.close()
    return out


def extract_seg(dataset: dict, rgb_path, out_path, threads: int = 1) -> int:
    """Write the seg shard ``out_path`` from the rgb shard ``rgb_path``."""
    settings = dataset["seg"]
    attrs = {"backend": settings["backend"], "short_side": settings["short_side"]}
    if settings["backend"] == "mediapipe":
        attrs["model"] = settings["model"]
    else:
        attrs.update(config=settings["mmseg"]["config"], checkpoint=settings["mmseg"]["checkpoint"],
                     person_class=settings["mmseg"]["person_class"])
    return derive_view("seg", rgb_path, out_path, partial(compute_seg, settings=settings), dataset["name"], attrs,
                       threads, settings["compression"])
