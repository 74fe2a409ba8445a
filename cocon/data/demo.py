"""The embedded demo dataset: small synthetic action videos, generated, never downloaded.

Each video moves a real photograph of a person (scikit-image's ``astronaut``, cut out as a
soft-edged head-and-torso portrait) over a crop of another bundled scikit-image picture,
along a trajectory that defines its class. Optical flow sees the motion, and MediaPipe
finds the person, so every view of the pipeline (rgb, flow, pose, seg) has something to
learn from. Per-video variation (speed, phase, size, tilt, background, brightness) keeps
the task from being trivial; everything is drawn from a generator seeded by
(seed, class, index), so a rerun writes the same bytes.

Two class sets (``demo.classes``):

- ``demo``: five trajectories that differ in their direction (the demo's, ``DEMO_CLASSES``).
  Flow alone separates them: a random flow encoder retrieves the right class almost always.
- ``motion``: ten motions that differ in their timing and their path, never in their
  direction, which is drawn per video (``MOTION_CLASSES``, the evidence benchmark's). The
  person, the background, her size, tilt and brightness are drawn independently of the
  class, so no single frame tells the class: only how she moves does.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from skimage import data as skimage_data

DEMO_CLASSES = (
    "slide_left_to_right",
    "slide_right_to_left",
    "bounce_up_down",
    "circle",
    "zoom_in",
)

# Bundled in the scikit-image wheel (no pooch download). Left out on purpose, because
# MediaPipe mistook them for (part of) the person: camera (a cameraman), chelsea (a cat's
# face), and coffee, retina, coins and motorcycle, which selfie segmentation merged with
# her orange suit (IoU with her true mask fell to about 0.5, against 0.7 to 0.9 here).
BACKGROUND_IMAGES = (
    "brick", "grass", "gravel", "rocket", "hubble_deep_field", "immunohistochemistry",
    "colorwheel", "moon", "cell", "clock", "page",
)

# The astronaut's head, collar ring and torso in the 512x512 photo, as filled ellipses
# ((centre x, centre y), (half width, half height)); their feathered union is her alpha.
PERSON_ELLIPSES = (((225, 105), (75, 92)), ((210, 230), (105, 65)), ((195, 375), (185, 135)))
PERSON_FEATHER = 10.0  # Gaussian sigma of the alpha edge, in photo pixels
# The point the trajectories move (her neck), in photo pixels: zooming grows her around
# it, so the face stays in frame.
PERSON_ANCHOR = (215.0, 200.0)

# The portrait is drawn at most this many times the frame height (zoom_in ends large),
# so the cut-out is prepared at that size and only ever shrunk when drawn.
MAX_PERSON_HEIGHT_FRACTION = 1.25


MOTION_CLASSES = (
    "glide",         # constant speed along a line
    "accelerate",    # along a line, from still to fast
    "decelerate",    # along a line, from fast to still
    "stop_and_go",   # along a line in 3 or 4 steps, resting between them
    "swing",         # back and forth along a line, smoothly (a sine)
    "zigzag",        # back and forth along a line at constant speed (a triangle wave)
    "shake",         # back and forth, small and fast
    "bounce",        # hops along a line, turning sharply at one end (|sine|)
    "orbit",         # around a circle
    "pulse",         # growing and shrinking in place
)
CLASS_SETS = {"demo": DEMO_CLASSES, "motion": MOTION_CLASSES}


def demo_video_names(num_classes: int = len(DEMO_CLASSES), videos_per_class: int = 8,
                     classes: str = "demo") -> list[tuple[str, str]]:
    """(class name, file stem) of every demo video, class by class, without touching the disk."""
    _check_counts(num_classes, videos_per_class, classes)
    return [
        (class_name, f"{class_name}_{index:03d}")
        for class_name in CLASS_SETS[classes][:num_classes]
        for index in range(videos_per_class)
    ]


def generate_demo(
    out_dir: str | os.PathLike,
    num_classes: int = len(DEMO_CLASSES),
    videos_per_class: int = 8,
    num_frames: int = 48,
    width: int = 160,
    height: int = 120,
    fps: int = 25,
    seed: int = 0,
    classes: str = "demo",
) -> list[Path]:
    """Write ``out_dir/<class>/<stem>.avi`` (MJPG) for every demo video and return the paths."""
    if num_frames < 2:
        raise ValueError(f"num_frames must be at least 2 for motion to exist, got {num_frames}")
    if width < 32 or height < 32:
        raise ValueError(f"frame size {width}x{height} is too small to show a person (minimum 32x32)")
    out_dir = Path(out_dir)
    paths = []
    for class_name, stem in demo_video_names(num_classes, videos_per_class, classes):
        video_index = int(stem.rsplit("_", 1)[1])
        frames = [frame for frame, _ in render_video(class_name, video_index, num_frames, width, height, seed)]
        path = out_dir / class_name / f"{stem}.avi"
        _write_avi(path, frames, fps)
        paths.append(path)
    return paths


def render_video(
    class_name: str, video_index: int, num_frames: int, width: int, height: int, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The frames of one demo video, each as (BGR uint8 frame, float32 person alpha in [0, 1]).

    The alpha is the ground-truth person mask, to judge segmentation against.
    """
    class_set = next((names for names in CLASS_SETS.values() if class_name in names), None)
    if class_set is None:
        raise ValueError(f"unknown demo class {class_name!r}; expected one of {DEMO_CLASSES + MOTION_CLASSES}")
    rng = np.random.default_rng([seed, class_set.index(class_name), video_index])
    background = _random_background(rng, width, height)
    look = _random_look(rng, height)
    portrait = _portrait(round(height * MAX_PERSON_HEIGHT_FRACTION))
    trajectory = _TRAJECTORIES[class_name](rng, width, height)
    frames = []
    for frame_index in range(num_frames):
        progress = frame_index / (num_frames - 1)
        placement = trajectory(progress)
        frames.append(_compose(background, portrait, look, placement))
    return frames


@dataclass(frozen=True)
class _Look:
    """What stays fixed through one video."""

    person_height: float  # pixels, before the class trajectory's own scaling
    tilt_degrees: float
    brightness: float


@dataclass(frozen=True)
class _Placement:
    """Where the portrait's anchor (a point on the neck) lands in one frame, and how large."""

    x: float
    y: float
    scale: float = 1.0


def _check_counts(num_classes: int, videos_per_class: int, classes: str = "demo") -> None:
    if classes not in CLASS_SETS:
        raise ValueError(f"demo.classes: {classes!r}; expected one of {sorted(CLASS_SETS)}")
    if not 1 <= num_classes <= len(CLASS_SETS[classes]):
        raise ValueError(f"num_classes must be between 1 and {len(CLASS_SETS[classes])} for the {classes!r} classes, "
                         f"got {num_classes}")
    if videos_per_class < 1:
        raise ValueError(f"videos_per_class must be at least 1, got {videos_per_class}")


def _random_look(rng: np.random.Generator, height: int) -> _Look:
    return _Look(
        person_height=height * rng.uniform(0.85, 1.0),
        tilt_degrees=rng.uniform(-6.0, 6.0),
        brightness=rng.uniform(0.8, 1.15),
    )


def _slide(direction: int):
    def trajectory(rng: np.random.Generator, width: int, height: int):
        travel = width * 0.4 * rng.uniform(0.75, 1.3)
        start = rng.uniform(0.2 * width, 0.8 * width - travel)
        y = height * rng.uniform(0.4, 0.5)
        if direction < 0:
            start = width - start
        return lambda progress: _Placement(start + direction * travel * progress, y)

    return trajectory


def _bounce(rng: np.random.Generator, width: int, height: int):
    x = width * rng.uniform(0.4, 0.6)
    rest_y = height * rng.uniform(0.48, 0.55)
    amplitude = height * rng.uniform(0.12, 0.18)
    bounces = rng.uniform(1.4, 2.6)
    phase = rng.uniform(0.0, 1.0)
    return lambda progress: _Placement(x, rest_y - amplitude * abs(math.sin(math.pi * (bounces * progress + phase))))


def _circle(rng: np.random.Generator, width: int, height: int):
    center_x = width * rng.uniform(0.42, 0.58)
    center_y = height * rng.uniform(0.42, 0.5)
    radius = height * rng.uniform(0.12, 0.17)
    turns = rng.uniform(0.8, 1.3)
    phase = rng.uniform(0.0, 2.0 * math.pi)
    direction = rng.choice((-1.0, 1.0))

    def trajectory(progress: float) -> _Placement:
        angle = phase + direction * 2.0 * math.pi * turns * progress
        return _Placement(center_x + radius * math.cos(angle), center_y + radius * math.sin(angle))

    return trajectory


def _zoom_in(rng: np.random.Generator, width: int, height: int):
    x = width * rng.uniform(0.4, 0.6)
    y = height * rng.uniform(0.4, 0.47)
    # Starting smaller than about two thirds of the frame height loses MediaPipe's pose
    # detector on busy backgrounds.
    start_scale = rng.uniform(0.68, 0.8)
    end_scale = min(start_scale + 0.4 * rng.uniform(0.75, 1.3), MAX_PERSON_HEIGHT_FRACTION)
    return lambda progress: _Placement(x, y, start_scale + (end_scale - start_scale) * progress)


def _smooth_steps(steps: int):
    """A staircase from -1 to 1 in ``steps`` moves, each taking the first half of its period
    (a smoothstep), at rest for the second half."""
    def profile(progress: float) -> float:
        position = min(progress, 1.0 - 1e-9) * steps
        step, within = int(position), position - int(position)
        move = min(1.0, 2.0 * within)
        return -1.0 + 2.0 * (step + move * move * (3.0 - 2.0 * move)) / steps
    return profile


def _triangle(phase: float) -> float:
    """A triangle wave of period 1 in [-1, 1]: the constant-speed twin of a sine."""
    fraction = phase % 1.0
    return 4.0 * fraction - 1.0 if fraction < 0.5 else 3.0 - 4.0 * fraction


def _line_profile(name: str, rng: np.random.Generator):
    """Position along the line in [-1, 1] against progress in [0, 1], and the share of the
    half travel it uses, for the motions along a line."""
    if name == "glide":
        return (lambda p: 2.0 * p - 1.0), 1.0
    if name == "accelerate":
        return (lambda p: 2.0 * p * p - 1.0), 1.0
    if name == "decelerate":
        return (lambda p: 1.0 - 2.0 * (1.0 - p) ** 2), 1.0
    if name == "stop_and_go":
        return _smooth_steps(int(rng.integers(3, 5))), 1.0
    cycles, phase = rng.uniform(1.6, 2.4), rng.uniform(0.0, 1.0)
    if name == "swing":
        return (lambda p: math.sin(2.0 * math.pi * (cycles * p + phase))), 0.6
    if name == "zigzag":
        return (lambda p: _triangle(cycles * p + phase)), 0.6
    if name == "bounce":
        return (lambda p: 1.0 - 2.0 * abs(math.sin(math.pi * (cycles * p + phase)))), 0.6
    fast = rng.uniform(6.0, 8.0)
    if name == "shake":
        return (lambda p: math.sin(2.0 * math.pi * (fast * p + phase))), 0.15
    raise ValueError(name)


def _motion(name: str):
    def trajectory(rng: np.random.Generator, width: int, height: int):
        # the direction is drawn per video, so that it never tells the class
        angle = rng.uniform(0.0, 2.0 * math.pi)
        direction = (math.cos(angle), math.sin(angle))
        center_x, center_y = width * rng.uniform(0.45, 0.55), height * rng.uniform(0.42, 0.5)
        half_travel = min(width, height) * rng.uniform(0.3, 0.4)
        if name == "orbit":
            radius, turns = half_travel * rng.uniform(0.4, 0.55), rng.uniform(1.0, 1.5) * rng.choice((-1.0, 1.0))
            return lambda p: _Placement(center_x + radius * math.cos(angle + 2.0 * math.pi * turns * p),
                                        center_y + radius * math.sin(angle + 2.0 * math.pi * turns * p))
        if name == "pulse":
            cycles, phase, depth = rng.uniform(1.6, 2.4), rng.uniform(0.0, 1.0), rng.uniform(0.12, 0.18)
            return lambda p: _Placement(center_x, center_y, 0.85 + depth * math.sin(2.0 * math.pi * (cycles * p + phase)))
        profile, share = _line_profile(name, rng)
        travel = half_travel * share
        return lambda p: _Placement(center_x + direction[0] * travel * profile(p),
                                    center_y + direction[1] * travel * profile(p))
    return trajectory


_TRAJECTORIES = {
    "slide_left_to_right": _slide(+1),
    "slide_right_to_left": _slide(-1),
    "bounce_up_down": _bounce,
    "circle": _circle,
    "zoom_in": _zoom_in,
    **{name: _motion(name) for name in MOTION_CLASSES},
}


@lru_cache(maxsize=None)
def _background_image(name: str) -> np.ndarray:
    image = getattr(skimage_data, name)()
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return cv2.cvtColor(image, cv2.COLOR_RGB2BGR)


def _random_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    image = _background_image(BACKGROUND_IMAGES[rng.integers(len(BACKGROUND_IMAGES))])
    image_height, image_width = image.shape[:2]
    crop_height = min(image_height, round(image_width * height / width)) * rng.uniform(0.45, 1.0)
    crop_width = crop_height * width / height
    top = rng.uniform(0.0, image_height - crop_height)
    left = rng.uniform(0.0, image_width - crop_width)
    crop = image[round(top):round(top + crop_height), round(left):round(left + crop_width)]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return cv2.resize(crop, (width, height), interpolation=cv2.INTER_AREA).astype(np.float32)


@lru_cache(maxsize=None)
def _portrait(max_height: int) -> tuple[np.ndarray, float]:
    """The astronaut with her feathered alpha (BGRA float32, alpha in [0, 1]), ``max_height``
    tall, and its scale from the photo.

    Shrinking once with area averaging here keeps the per-frame warp from aliasing.
    """
    photo = cv2.cvtColor(skimage_data.astronaut(), cv2.COLOR_RGB2BGR)
    photo_height, photo_width = photo.shape[:2]
    person = np.zeros((photo_height, photo_width), np.float32)
    for centre, half_axes in PERSON_ELLIPSES:
        cv2.ellipse(person, centre, half_axes, 0, 0, 360, 1.0, thickness=-1)
    alpha = cv2.GaussianBlur(person, (0, 0), PERSON_FEATHER)
    photo_with_alpha = np.dstack([photo.astype(np.float32), alpha])
    scale = max_height / photo_height
    size = (round(photo_width * scale), max_height)
    return cv2.resize(photo_with_alpha, size, interpolation=cv2.INTER_AREA), scale


def _compose(
    background: np.ndarray, portrait: tuple[np.ndarray, float], look: _Look, placement: _Placement
) -> tuple[np.ndarray, np.ndarray]:
    height, width = background.shape[:2]
    photo, photo_scale = portrait
    anchor = (PERSON_ANCHOR[0] * photo_scale, PERSON_ANCHOR[1] * photo_scale)
    scale = look.person_height * placement.scale / photo.shape[0]
    warp = cv2.getRotationMatrix2D(anchor, look.tilt_degrees, scale)
    warp[:, 2] += (placement.x - anchor[0], placement.y - anchor[1])
    person = cv2.warpAffine(photo, warp, (width, height), flags=cv2.INTER_LINEAR)
    alpha = person[..., 3:]
    frame = (background * (1.0 - alpha) + person[..., :3] * alpha) * look.brightness
    return np.clip(frame + 0.5, 0, 255).astype(np.uint8), alpha[..., 0]


def _write_avi(path: Path, frames: list[np.ndarray], fps: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames[0].shape[:2]
    # OpenCV's own MJPEG muxer rather than FFmpeg's: it needs no codec library and writes
    # no encoder version or timestamp, so the same frames always give the same bytes.
    writer = cv2.VideoWriter(str(path), cv2.CAP_OPENCV_MJPEG, cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV could not open an MJPG video writer for {path}")
    try:
        for frame in frames:
            writer.write(frame)
    finally:
        writer.release()
