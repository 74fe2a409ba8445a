"""The pose stage: 17 COCO keypoint confidence heatmaps per frame from an off-the-shelf model.

Each person's heatmap is a Gaussian at the detected keypoint scaled by the model's
confidence in it; with ``people: all`` the heatmaps of every person found are summed, each
weighted by its detection score, and clipped to the uint8 range, as the authors'
extraction did with Keypoint R-CNN (CoCon's ``process_data``). A frame without a person
is zero. Backends:

- ``mediapipe`` (default): MediaPipe Pose (BlazePose, the full model that ships inside the
  wheel), tracked through the video. A fresh model per video: a reused one carries its
  smoothing state into the next video. Its 33 landmarks map to COCO by name
  (``MEDIAPIPE_TO_COCO``); the confidence is the landmark's ``visibility``, and joints that
  MediaPipe places outside the frame get none.

  ``people: one``: the legacy Pose solution, one person per frame. Its ``presence`` is
  always 0 in this API. The person detector runs only when the tracker loses the person
  (tracking confidence below ``min_tracking_confidence``, 0.2): the tracker holds a person
  more steadily than the detector finds one, so at MediaPipe's 0.5 the rate swung with the
  frames' resolution and JPEG (bench/pose_resolution.py).

  ``people: all``: the Tasks PoseLandmarker, up to ``num_poses`` people per frame, from the
  same two models with the input metadata that the Tasks graph reads written onto them
  by the wheel's own metadata writer (``mediapipe_pose_bundle``). It reports no detection
  score, so each person weighs 1 (the visibilities already scale its joints).
- ``mmpose``: any top-down mmpose model with 17 COCO keypoints, from the config and
  checkpoint files the user names. Without ``mmpose.detector`` the whole frame is the one
  person box; with it, an mmdet detector's ``person`` boxes scoring at least
  ``score_threshold`` are the people (``one``: the best of them), each weighted by its score.
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
    """MediaPipe Pose, one instance per video: it tracks one person from frame to frame."""

    def __init__(self, settings: dict):
        from mediapipe.python.solutions.pose import Pose

        # min_tracking_confidence: below it MediaPipe drops the tracked person and reruns its person
        # detector; the detector finds fewer people than the tracker keeps and flips with tiny changes
        # of the frame (resize, JPEG), so a low threshold keeps the rate stable across resolutions
        self._pose = Pose(static_image_mode=False, model_complexity=1, smooth_landmarks=True,
                          min_detection_confidence=settings["min_detection_confidence"],
                          min_tracking_confidence=settings["min_tracking_confidence"])

    def people(self, frame_rgb: np.ndarray) -> list[tuple[np.ndarray, float]]:
        """The tracked person's ``[17, 3]`` keypoints (fractions of the frame, confidence) and weight 1, or nobody."""
        result = self._pose.process(frame_rgb)
        if result.pose_landmarks is None:
            return []
        return [(mediapipe_coco_keypoints(result.pose_landmarks.landmark), 1.0)]

    def close(self) -> None:
        self._pose.close()


# the input scaling of the two BlazePose models, as the legacy Pose graph feeds them:
# the detector reads [-1, 1], the landmark model [0, 1]
POSE_DETECTOR_NORMALIZATION = (127.5, 127.5)
POSE_LANDMARKS_NORMALIZATION = (0.0, 255.0)


def mediapipe_pose_bundle() -> bytes:
    """A PoseLandmarker model bundle built from the models inside the mediapipe wheel.

    The wheel ships BlazePose's detector and full landmark model for the legacy solution,
    without the input metadata (normalisation) that the Tasks graph requires; the wheel's
    own metadata writer adds it, and its bundle writer packs the two under the names the
    Tasks graph looks for. Nothing is downloaded.
    """
    import io

    import mediapipe
    from mediapipe.tasks.python.metadata.metadata_writers import metadata_writer, model_asset_bundle_utils, writer_utils

    modules = Path(mediapipe.__file__).parent / "modules"

    def with_input_metadata(path: Path, normalization: tuple[float, float]) -> bytes:
        model = path.read_bytes()
        writer = metadata_writer.MetadataWriter.create(bytearray(model)).add_general_info(path.stem)
        writer.add_image_input([normalization[0]], [normalization[1]])
        for _ in writer_utils.get_output_tensor_types(model):
            writer.add_feature_output()
        return bytes(writer.populate()[0])

    bundle = io.BytesIO()
    model_asset_bundle_utils.create_model_asset_bundle({
        "pose_detector.tflite": with_input_metadata(modules / "pose_detection" / "pose_detection.tflite",
                                                    POSE_DETECTOR_NORMALIZATION),
        "pose_landmarks_detector.tflite": with_input_metadata(modules / "pose_landmark" / "pose_landmark_full.tflite",
                                                              POSE_LANDMARKS_NORMALIZATION),
    }, bundle)
    return bundle.getvalue()


def mediapipe_coco_keypoints(landmarks) -> np.ndarray:
    """``[17, 3]`` COCO keypoints (fractions of the frame, confidence) of MediaPipe's 33 landmarks."""
    out = np.array([(landmarks[index].x, landmarks[index].y, landmarks[index].visibility)
                    for index in MEDIAPIPE_TO_COCO], dtype=np.float32)
    # MediaPipe extrapolates joints outside the frame; they are not seen, so they get no heatmap
    outside = (out[:, 0] < 0) | (out[:, 0] > 1) | (out[:, 1] < 0) | (out[:, 1] > 1)
    out[outside, 2] = 0
    return out


class MediaPipePoses:
    """MediaPipe's Tasks PoseLandmarker, one instance per video: up to ``num_poses`` people, tracked."""

    # timestamps that the video mode requires to increase; the frame rate does not matter
    FRAME_MS = 40

    def __init__(self, settings: dict):
        from mediapipe.tasks.python import BaseOptions, vision

        options = vision.PoseLandmarkerOptions(
            base_options=BaseOptions(model_asset_buffer=mediapipe_pose_bundle()),
            running_mode=vision.RunningMode.VIDEO, num_poses=settings["num_poses"],
            min_pose_detection_confidence=settings["min_detection_confidence"],
            min_tracking_confidence=settings["min_tracking_confidence"])
        self._landmarker = vision.PoseLandmarker.create_from_options(options)
        self._frame = 0

    def people(self, frame_rgb: np.ndarray) -> list[tuple[np.ndarray, float]]:
        import mediapipe

        image = mediapipe.Image(image_format=mediapipe.ImageFormat.SRGB, data=np.ascontiguousarray(frame_rgb))
        result = self._landmarker.detect_for_video(image, self._frame * self.FRAME_MS)
        self._frame += 1
        return [(mediapipe_coco_keypoints(landmarks), 1.0) for landmarks in result.pose_landmarks]

    def close(self) -> None:
        self._landmarker.close()


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
    """A top-down mmpose model, on the whole frame or on the person boxes of an mmdet detector."""

    def __init__(self, settings: dict):
        from mmpose.apis import init_model

        mm = settings["mmpose"]
        with full_checkpoint_loading():
            self._model = init_model(mm["config"], mm["checkpoint"], device=mm["device"])
        count = self._model.dataset_meta.get("num_keypoints")
        if count != len(COCO_KEYPOINTS):
            raise ConfigError(f"pose.mmpose.config: {mm['config']} predicts {count} keypoints, not the 17 of COCO")
        self._detector = PersonDetector(mm["detector"], mm["device"]) if mm["detector"]["config"] else None
        self._all_people = settings["people"] == "all"

    def people(self, frame_rgb: np.ndarray) -> list[tuple[np.ndarray, float]]:
        from mmpose.apis import inference_topdown

        frame_bgr = np.ascontiguousarray(frame_rgb[..., ::-1])
        if self._detector is None:
            boxes, scores = None, [1.0]  # mmpose's default box: the whole frame
        else:
            boxes, scores = self._detector.people(frame_bgr)
            if not self._all_people:
                boxes, scores = boxes[:1], scores[:1]
            if not len(boxes):
                return []  # inference_topdown would take the whole frame instead
        height, width = frame_rgb.shape[:2]
        people = []
        for pose, score in zip(inference_topdown(self._model, frame_bgr, boxes, bbox_format="xyxy"), scores):
            found = pose.pred_instances
            keypoints = np.zeros((len(COCO_KEYPOINTS), 3), dtype=np.float32)
            keypoints[:, 0] = found.keypoints[0][:, 0] / width
            keypoints[:, 1] = found.keypoints[0][:, 1] / height
            keypoints[:, 2] = np.clip(found.keypoint_scores[0], 0, 1)
            people.append((keypoints, float(score)))
        return people

    def close(self) -> None:
        pass


class PersonDetector:
    """An mmdet detector's ``person`` boxes (xyxy, frame pixels) and scores, best first."""

    def __init__(self, settings: dict, device: str):
        from mmdet.apis import init_detector
        from mmengine.config import Config
        from mmpose.utils import adapt_mmdet_pipeline

        # mmpose's inference makes its own registry the default, where mmdet's transforms are
        # unknown: the detector's test pipeline names them with mmdet's scope (as mmpose's demo does)
        config = adapt_mmdet_pipeline(Config.fromfile(settings["config"]))
        with full_checkpoint_loading():
            self._model = init_detector(config, settings["checkpoint"], device=device)
        classes = list(self._model.dataset_meta.get("classes") or [])
        if "person" not in classes:
            raise ConfigError(f"pose.mmpose.detector.config: {settings['config']} has no class named person "
                              f"(its classes: {classes[:10]}{' ...' if len(classes) > 10 else ''})")
        self._person = classes.index("person")
        self._threshold = settings["score_threshold"]

    def people(self, frame_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from mmdet.apis import inference_detector

        found = inference_detector(self._model, frame_bgr).pred_instances
        scores = found.scores.cpu().numpy()
        keep = (found.labels.cpu().numpy() == self._person) & (scores >= self._threshold)
        order = np.argsort(-scores[keep], kind="stable")
        return found.bboxes.cpu().numpy()[keep][order], scores[keep][order]


def pose_model(settings: dict):
    """The pose model of one video, for ``settings`` (a dataset's ``pose`` section)."""
    if settings["backend"] == "mmpose":
        return MMPose(settings)
    return MediaPipePoses(settings) if settings["people"] == "all" else MediaPipePose(settings)


def backend_files(settings: dict, key: str) -> list[str]:
    """The model files an mm backend reads (none for mediapipe), checked before any job runs:
    a missing package or file is a ConfigError naming the key; nothing is ever downloaded."""
    backend = settings["backend"]
    if backend == "mediapipe":
        return []
    # the apis, not just the package: ``import mmpose`` succeeds without mmdet or mmcv's compiled ops
    _import_apis(backend, f"{key}.backend: {backend} is selected but")
    paths = _model_files(settings[backend], f"{key}.{backend}", f"{key}.backend is {backend}")
    if backend == "mmpose":
        detector = settings["mmpose"]["detector"]
        if detector["config"] or detector["checkpoint"]:
            _import_apis("mmdet", f"{key}.mmpose.detector: is set but mmdet")
            paths += _model_files(detector, f"{key}.mmpose.detector", f"{key}.mmpose.detector is set")
    return paths


def _import_apis(package: str, problem: str) -> None:
    try:
        __import__(f"{package}.apis")
    except ImportError as error:
        raise ConfigError(f"{problem} cannot be imported ({error}); "
                          "install it with `make mm` (the README's mmpose and mmsegmentation section)") from None


def _model_files(settings: dict, key: str, when: str) -> list[str]:
    paths = []
    for name in ("config", "checkpoint"):
        path = settings.get(name)
        if not path:
            raise ConfigError(f"{key}.{name}: required when {when}")
        if not Path(path).is_file():
            raise ConfigError(f"{key}.{name}: file not found: {path}")
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


def people_heatmaps(people: list[tuple[np.ndarray, float]], height: int, width: int, sigma: float) -> np.ndarray:
    """uint8 ``[17, height, width]``: every person's heatmaps times its weight, summed, clipped to [0, 255]."""
    total = np.zeros((len(COCO_KEYPOINTS), height, width), dtype=np.float32)
    for keypoints, weight in people:
        total += weight * render_heatmaps(keypoints, height, width, sigma)
    return to_uint8(total)


def compute_pose(frames_rgb: np.ndarray, settings: dict) -> np.ndarray:
    """uint8 heatmaps ``[T, 17, h, w]`` of RGB frames ``[T, H, W, 3]`` (h, w at ``short_side``)."""
    height, width = view_size(frames_rgb.shape[1], frames_rgb.shape[2], settings["short_side"])
    out = np.zeros((len(frames_rgb), len(COCO_KEYPOINTS), height, width), dtype=np.uint8)
    model = pose_model(settings)
    try:
        for index, frame in enumerate(frames_rgb):
            out[index] = people_heatmaps(model.people(frame), height, width, settings["sigma"])
    finally:
        model.close()
    return out


def extract_pose(dataset: dict, rgb_path, out_path, threads: int = 1) -> int:
    """Write the pose shard ``out_path`` from the rgb shard ``rgb_path``."""
    settings = dataset["pose"]
    attrs = {"backend": settings["backend"], "keypoints": list(COCO_KEYPOINTS), "sigma": settings["sigma"],
             "short_side": settings["short_side"], "people": settings["people"]}
    if settings["backend"] == "mmpose":
        mm = settings["mmpose"]
        attrs.update(config=mm["config"], checkpoint=mm["checkpoint"])
        if mm["detector"]["config"]:
            attrs.update(detector_config=mm["detector"]["config"], detector_checkpoint=mm["detector"]["checkpoint"],
                         detector_score_threshold=mm["detector"]["score_threshold"])
    elif settings["people"] == "all":
        attrs["num_poses"] = settings["num_poses"]
    return derive_view("pose", rgb_path, out_path, partial(compute_pose, settings=settings), dataset["name"], attrs,
                       threads, settings["compression"])
