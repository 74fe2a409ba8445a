"""Clips for training and testing: N blocks of K frames, 1 frame in ``stride``, from the view shards.

A multi-view sample takes every view from the same time window of the same video. All
randomness of a sample (its start, crops, flips, jitter) comes from a generator seeded
by (seed, epoch, index), so a sample is the same whatever the number of workers and
after a resume.

Short videos: when a video has fewer usable frames than a window spans, the frame
indices wrap around (the video is looped), never padded with zeros. Usable frames are
``num_frames - 1``, the length of the flow view, so that every view has every index.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF

from cocon.data.manifest import read_manifest
from cocon.data.shards import ShardReader

log = logging.getLogger(__name__)

VIEW_CHANNELS = {"rgb": 3, "flow": 2, "pose": 17, "seg": 1}
# COCO keypoints after a horizontal flip: left and right swap
POSE_FLIP_ORDER = (0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# training augmentations: pretraining's (per-frame jitter and greying) and DPC's fine-tuning one
AUGMENTATIONS = ("pretrain", "finetune")


@dataclass(frozen=True)
class ClipSpec:
    num_blocks: int = 8
    block_length: int = 5
    stride: int = 3

    @property
    def num_frames(self) -> int:
        return self.num_blocks * self.block_length

    @property
    def span(self) -> int:
        """Frames of the video one window covers, from its first to its last frame."""
        return (self.num_frames - 1) * self.stride + 1


def usable_frames(num_frames: int) -> int:
    return max(num_frames - 1, 1)


def window_indices(num_frames: int, spec: ClipSpec, start: int) -> np.ndarray:
    """Frame indices of the window starting at ``start``, looped over short videos."""
    return (start + np.arange(spec.num_frames) * spec.stride) % usable_frames(num_frames)


def dense_starts(num_frames: int, spec: ClipSpec) -> list[int]:
    """Starts of the test windows: windows of N blocks overlapping by half (a step of N/2
    blocks), every window that fits in the video, as DPC's and CoCon's dense test cut them.
    The frames after the last whole window are left out, as there: a window shifted back to
    end at the last frame would nearly repeat the one before it and count the tail twice. A
    video shorter than one window gets one (looped) window, where DPC drops the video."""
    usable = usable_frames(num_frames)
    if usable <= spec.span:
        return [0]
    step = spec.num_frames // 2 * spec.stride
    return list(range(0, usable - spec.span + 1, step))


@dataclass(frozen=True)
class VideoRef:
    video_id: str
    shard: str
    num_frames: int
    label_index: int


def split_videos(manifest_path, split: int, val_fraction: float, seed: int):
    """(train, val, test) VideoRefs of ``split``: val is carved from its train part, per class."""
    rows = [row for row in read_manifest(manifest_path) if row.ok]
    refs = {row.video_id: VideoRef(row.video_id, row.shard, row.num_frames, row.label_index) for row in rows}
    train = [row for row in rows if row.role(split) == "train"]
    test = [refs[row.video_id] for row in rows if row.role(split) == "test"]
    generator = np.random.default_rng(seed)
    val_ids = set()
    for label in sorted({row.label_index for row in train}):
        members = sorted(row.video_id for row in train if row.label_index == label)
        count = int(round(len(members) * val_fraction))
        if count and len(members) > 1:
            val_ids.update(generator.choice(members, size=min(count, len(members) - 1), replace=False).tolist())
    if not val_ids and len(train) > 1:
        # no class has videos to spare (a handful of clips): validate on a share of the
        # whole train part instead, still never on the test split
        count = min(max(1, int(round(len(train) * val_fraction))), len(train) - 1)
        val_ids.update(generator.choice(sorted(row.video_id for row in train), size=count, replace=False).tolist())
        log.warning("no class has a video to spare for validation: %d train video(s) of any class validate", count)
    return ([refs[row.video_id] for row in train if row.video_id not in val_ids],
            [refs[video_id] for video_id in sorted(val_ids)], test)


def sample_seed(*keys: int) -> int:
    """A well-mixed 64-bit seed from integer keys (seed, epoch, item)."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1, dtype=np.uint64)[0] >> 1)


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * torch.rand((), generator=generator).item()


def central_square(height: int, width: int, share: float = 1.0) -> tuple[int, int, int, int]:
    """(top, left, h, w) of the central square whose side is ``share`` of the short side."""
    side = max(1, int(round(share * min(height, width))))
    return (height - side) // 2, (width - side) // 2, side, side


def crop_box(height: int, width: int, generator: torch.Generator | None,
             center_crop: float = 1.0) -> tuple[int, int, int, int]:
    """(top, left, h, w): a random crop of 50-100% of the area with aspect 3/4-4/3 (DPC's
    RandomSizedCrop), or, when ``generator`` is None (testing), the central square of
    ``center_crop`` times the short side (DPC tests on CenterCrop 224 of 240-px frames)."""
    if generator is None:
        return central_square(height, width, center_crop)
    area = height * width
    for _ in range(10):
        target = _uniform(generator, 0.5, 1.0) * area
        aspect = np.exp(_uniform(generator, np.log(3 / 4), np.log(4 / 3)))
        w = int(round(np.sqrt(target * aspect)))
        h = int(round(np.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (), generator=generator))
            left = int(torch.randint(0, width - w + 1, (), generator=generator))
            return top, left, h, w
    return central_square(height, width)


# test-time crops: the centre (1); the four corners and the centre (5); the same five flipped (10)
TEST_CROPS = (1, 5, 10)


def test_crop_box(height: int, width: int, share: float, index: int) -> tuple[tuple[int, int, int, int], bool]:
    """Test crop ``index`` of the ten (0 is the centre): the square of ``share`` times the short
    side at the centre (0), the top-left (1), top-right (2), bottom-left (3) and bottom-right
    (4) corners, and 5-9 the same five flipped. Returns ((top, left, h, w), flipped)."""
    if not 0 <= index < max(TEST_CROPS):
        raise ValueError(f"test crop {index} is not one of 0..{max(TEST_CROPS) - 1}")
    top, left, side, _ = central_square(height, width, share)
    corners = [(top, left), (0, 0), (0, width - side), (height - side, 0), (height - side, width - side)]
    row, column = corners[index % 5]
    return (row, column, side, side), index >= 5


def flip_view(view: str, clip: torch.Tensor) -> torch.Tensor:
    """``clip`` ``[T, C, H, W]`` (values in [0, 1]) mirrored left to right, as each view must be:
    pose swaps its left and right keypoints, and flow's horizontal component u changes sign
    (1 - u in [0, 1], where 0.5 is no motion)."""
    clip = TF.hflip(clip)
    if view == "pose":
        clip = clip[:, list(POSE_FLIP_ORDER)]
    elif view == "flow":
        clip = torch.cat([1 - clip[:, :1], clip[:, 1:]], dim=1)
    return clip


def clip_tensor(view: str, frames: np.ndarray) -> torch.Tensor:
    """Stored frames as ``augment`` takes them: rgb stays uint8 ``[T, 3, H, W]``, so that the
    crop is resized on a quarter of the bytes (as DPC resizes uint8 images) before it
    becomes float; flow, pose and seg become float at once (to_view_tensor), keeping their
    quantisation steps out of the resize."""
    if view == "rgb":
        return torch.from_numpy(frames).permute(0, 3, 1, 2)
    return to_view_tensor(view, frames)


def to_view_tensor(view: str, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Stored frames (an array, or a tensor on any device) to float ``[T, C, H, W]``: rgb and
    flow in [0, 1], pose and seg in [0, 1]."""
    tensor = torch.as_tensor(frames)
    if view in ("rgb", "flow"):
        tensor = tensor.permute(0, 3, 1, 2)
    elif view == "seg":
        tensor = tensor[:, None]
    elif view != "pose":  # pose is stored as [T, 17, H, W] already
        raise ValueError(f"unknown view {view!r}")
    return tensor.float() / 255


def draw_frame_jitter(num_frames: int, generator: torch.Generator) -> torch.Tensor:
    """Pretraining's per-frame jitter parameters, drawn in the order the per-frame path
    draws them: ``[T, 5]`` float64 (brightness, contrast, saturation in 0.5-1.5, hue in
    -0.25-0.25, greyed 1 or 0 with probability 0.5). One ``torch.rand`` call of T x 5 values
    takes the generator's numbers in the sequence T x 5 scalar calls would, and the
    arithmetic is _uniform's in float64, so the values and the generator's state after
    are those of the per-frame path (tested)."""
    uniform = torch.rand(num_frames, 5, generator=generator).double()  # [T, 5]
    return torch.stack([0.5 + uniform[:, 0], 0.5 + uniform[:, 1], 0.5 + uniform[:, 2],
                        -0.25 + 0.5 * uniform[:, 3], (uniform[:, 4] < 0.5).double()], dim=1)


_GREY = (0.2989, 0.587, 0.114)


def _grey(images: torch.Tensor) -> torch.Tensor:
    """torchvision's rgb_to_grayscale of ``[T, 3, H, W]``, as ``[T, H, W]``."""
    return _GREY[0] * images[:, 0] + _GREY[1] * images[:, 1] + _GREY[2] * images[:, 2]


def apply_frame_jitter(clip: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """``clip`` ``[T, 3, H, W]`` with pretraining's jitter ``factors`` (draw_frame_jitter),
    all frames at once: brightness, contrast (each frame blended with its own mean grey),
    saturation, hue, then greying. The arithmetic of torchvision's per-image functions
    (``ratio * a + (1 - ratio) * b`` in float32, clamped), with hue rotated by the closed
    form of HSV's sectors: equal to the per-frame path to float rounding (about 1e-6)."""
    frames = len(clip)
    dtype = clip.dtype

    def per_frame(values: torch.Tensor) -> torch.Tensor:
        return values.to(dtype).view(frames, 1, 1, 1)

    brightness, contrast, saturation, hue, grey = factors.unbind(dim=1)
    x = clip * per_frame(brightness)
    x.clamp_(0, 1)
    mean = _grey(x).mean(dim=(-2, -1)).view(frames, 1, 1, 1)
    x.mul_(per_frame(contrast)).add_(per_frame(1.0 - contrast) * mean).clamp_(0, 1)
    grey_x = _grey(x).unsqueeze(1)
    x.mul_(per_frame(saturation)).add_(per_frame(1.0 - saturation) * grey_x).clamp_(0, 1)
    # hue: torchvision's rgb -> hsv hue (in sixths), + 6 * hue mod 6, then back to rgb by the
    # closed form of the sectors: channel = max - chroma * clamp(distance to its sector - 1)
    r, g, b = x.unbind(dim=1)
    maxc = x.amax(dim=1)
    chroma = maxc - x.amin(dim=1)
    divisor = torch.where(chroma == 0, torch.ones_like(chroma), chroma)
    is_r = maxc == r
    is_g = (maxc == g) & ~is_r
    h6 = torch.where(is_r, g - b, torch.where(is_g, b - r + 2 * divisor, r - g + 4 * divisor))
    h6.div_(divisor).add_(6.0 * hue.to(dtype).view(frames, 1, 1))
    h6.sub_(torch.floor(h6 / 6.0).mul_(6.0))
    out = torch.empty_like(x)
    torch.sub(maxc, chroma * (2.0 - (h6 - 3.0).abs_()).clamp_(0, 1), out=out[:, 0])
    torch.sub(maxc, chroma * ((h6 - 2.0).abs_() - 1.0).clamp_(0, 1), out=out[:, 1])
    torch.sub(maxc, chroma * ((h6 - 4.0).abs_() - 1.0).clamp_(0, 1), out=out[:, 2])
    if torch.compiler.is_compiling():  # static shapes: no data-dependent indexing
        out = torch.where(grey.view(frames, 1, 1, 1) > 0, _grey(out).unsqueeze(1), out)
    else:
        greyed = torch.nonzero(grey > 0).flatten()
        if len(greyed):
            out[greyed] = _grey(out[greyed]).unsqueeze(1).expand(-1, 3, -1, -1)
    return out.clamp_(0, 1)


def jitter_frames(clip: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Pretraining: colour jitter drawn for each frame of ``clip`` ``[T, 3, H, W]``, then
    half of the frames greyed, so that the network cannot learn low-level flow from colour.
    One batched op over the frames with per-frame factors; the same draws, in the same
    order, and the same output as jitter_frames_per_frame."""
    return apply_frame_jitter(clip, draw_frame_jitter(len(clip), generator))


def jitter_frames_per_frame(clip: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The per-frame path (a Python loop of torchvision calls), kept as the reference."""
    frames = []
    for frame in clip:
        frame = TF.adjust_brightness(frame, _uniform(generator, 0.5, 1.5))
        frame = TF.adjust_contrast(frame, _uniform(generator, 0.5, 1.5))
        frame = TF.adjust_saturation(frame, _uniform(generator, 0.5, 1.5))
        frame = TF.adjust_hue(frame, _uniform(generator, -0.25, 0.25))
        if torch.rand((), generator=generator) < 0.5:
            frame = TF.rgb_to_grayscale(frame, num_output_channels=3)
        frames.append(frame)
    return torch.stack(frames).clamp(0, 1)


@dataclass(frozen=True)
class ClipJitter:
    """Fine-tuning's clip-wide colour jitter, as drawn: the factors, and the order (indices
    into brightness, contrast, saturation, hue) in which they are applied."""
    brightness: float
    contrast: float
    saturation: float
    hue: float
    order: tuple[int, ...]


def draw_clip_jitter(generator: torch.Generator, probability: float) -> ClipJitter | None:
    """Fine-tuning (DPC's ColorJitter(0.5, 0.5, 0.5, 0.25, p=0.3, consistent=True)): with
    ``probability``, one draw of brightness, contrast, saturation and hue factors and of a
    random order to apply them in (as DPC's, after torchvision's, ColorJitter); None when
    the clip is not jittered."""
    if torch.rand((), generator=generator) >= probability:
        return None
    brightness, contrast, saturation = (_uniform(generator, 0.5, 1.5) for _ in range(3))
    hue = _uniform(generator, -0.25, 0.25)
    order = tuple(torch.randperm(4, generator=generator).tolist())
    return ClipJitter(brightness, contrast, saturation, hue, order)


def apply_clip_jitter(clip: torch.Tensor, jitter: ClipJitter) -> torch.Tensor:
    """``jitter`` applied to every frame of ``clip`` ``[T, 3, H, W]`` alike; never greyed.
    Contrast still blends each frame with its own mean grey, as DPC's per-image transform does."""
    adjustments = [lambda frames: TF.adjust_brightness(frames, jitter.brightness),
                   lambda frames: TF.adjust_contrast(frames, jitter.contrast),
                   lambda frames: TF.adjust_saturation(frames, jitter.saturation),
                   lambda frames: TF.adjust_hue(frames, jitter.hue)]
    for index in jitter.order:
        clip = adjustments[index](clip)
    return clip.clamp(0, 1)


def crop_resize(clip: torch.Tensor, box: tuple[int, int, int, int], size: int) -> torch.Tensor:
    """``clip`` ``[T, C, H, W]`` cropped to ``box`` (top, left, h, w) and resized to ``size``
    with antialiased bilinear filtering, as float in [0, 1]. A uint8 clip on the CPU is
    resized before it becomes float (a quarter of the bytes; CUDA's kernel is float only)."""
    top, left, h, w = box
    if clip.dtype == torch.uint8 and clip.device.type == "cpu":
        # torch's antialiased bilinear kernel for uint8 wants channels-last images; the jitter
        # after it reads whole channels, which are contiguous only in the standard layout
        crop = clip[..., top:top + h, left:left + w].contiguous(memory_format=torch.channels_last)
        return TF.resize(crop, [size, size], antialias=True).float().div_(255).contiguous()
    if clip.dtype == torch.uint8:
        clip = clip[..., top:top + h, left:left + w].float().div_(255)
        top, left = 0, 0
    return TF.resized_crop(clip, top, left, h, w, [size, size], antialias=True)


@dataclass(frozen=True)
class ViewDraws:
    """Every random choice of one view of a sample (draw_view), made before any pixel is
    touched, so that the CPU loader and the device loader apply the same ones: the crop box
    (top, left, h, w), the flip, and rgb's colour jitter (``frame_jitter``, pretraining's
    per-frame factors ``[T, 5]``; ``clip_jitter``, fine-tuning's, when drawn)."""
    box: tuple[int, int, int, int]
    flip: bool = False
    frame_jitter: torch.Tensor | None = None
    clip_jitter: ClipJitter | None = None


def draw_view(view: str, height: int, width: int, num_frames: int, generator: torch.Generator | None,
              augmentation: str = "pretrain", color_jitter: float = 0.3, center_crop: float = 1.0,
              test_crop: int = 0) -> ViewDraws:
    """The draws of one view of a sample whose stored frames are ``height`` x ``width``, in
    this order: the crop box (crop_box: how many numbers it takes depends on the frame size),
    then, except for flow (a flip would have to negate u), the flip, then for rgb the colour
    jitter, per frame for ``augmentation`` "pretrain" (draw_frame_jitter), once per clip with
    probability ``color_jitter`` for "finetune" (draw_clip_jitter). ``generator`` None
    (testing): nothing random, test crop ``test_crop`` of the ten of ``center_crop`` times the
    short side (test_crop_box; 0 is the central square), flipped for 5-9."""
    if augmentation not in AUGMENTATIONS:
        raise ValueError(f"augmentation {augmentation!r} is not one of {AUGMENTATIONS}")
    if generator is None:
        return ViewDraws(*test_crop_box(height, width, center_crop, test_crop))
    box = crop_box(height, width, generator, center_crop)
    if view == "flow":
        return ViewDraws(box)
    flip = bool(torch.rand((), generator=generator) < 0.5)
    if view != "rgb":
        return ViewDraws(box, flip)
    if augmentation == "pretrain":
        return ViewDraws(box, flip, frame_jitter=draw_frame_jitter(num_frames, generator))
    return ViewDraws(box, flip, clip_jitter=draw_clip_jitter(generator, color_jitter))


def crop_and_flip(view: str, clip: torch.Tensor, size: int, draws: ViewDraws) -> torch.Tensor:
    """``clip`` ``[T, C, H, W]`` (uint8 rgb or float, on any device) cropped to the drawn box,
    resized to ``size`` (crop_resize) and flipped when drawn, as each view must be (flip_view)."""
    clip = crop_resize(clip, draws.box, size)
    return flip_view(view, clip) if draws.flip else clip


def apply_draws(view: str, clip: torch.Tensor, size: int, draws: ViewDraws) -> torch.Tensor:
    """``clip`` ``[T, C, H, W]`` augmented as ``draws`` say: crop_and_flip, then rgb's jitter."""
    clip = crop_and_flip(view, clip, size, draws)
    if draws.frame_jitter is not None:
        clip = apply_frame_jitter(clip, draws.frame_jitter.to(clip.device))
    elif draws.clip_jitter is not None:
        clip = apply_clip_jitter(clip, draws.clip_jitter)
    return clip


def augment(view: str, clip: torch.Tensor, size: int, generator: torch.Generator | None,
            augmentation: str = "pretrain", color_jitter: float = 0.3, center_crop: float = 1.0,
            test_crop: int = 0) -> torch.Tensor:
    """Crop and resize ``clip`` ``[T, C, H, W]`` (float in [0, 1], or uint8 as clip_tensor gives
    rgb) to ``size`` (crop_resize; the same box for the whole clip), then per view: rgb is
    flipped for the whole clip and colour-jittered, frame by frame with greying for
    ``augmentation`` "pretrain", once per clip with probability ``color_jitter`` for
    "finetune"; flow gets the crop only; pose and seg are flipped, pose swapping its left and
    right keypoints. The draws come from ``generator`` in draw_view's order. ``generator``
    None: nothing random, the central square of ``center_crop`` times the short side
    (testing), or with ``test_crop`` another of the ten test crops (test_crop_box) of that size."""
    draws = draw_view(view, clip.shape[-2], clip.shape[-1], len(clip), generator, augmentation, color_jitter,
                      center_crop, test_crop)
    return apply_draws(view, clip, size, draws)


def normalize(view: str, clip: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """The network's input range: rgb standardised with ImageNet's statistics, flow in
    [-1, 1], pose and seg as they are. ``inplace`` overwrites ``clip`` (one pass fewer, for
    a clip nothing else holds)."""
    if view == "rgb":
        return TF.normalize(clip, IMAGENET_MEAN, IMAGENET_STD, inplace=inplace)
    if view == "flow":
        return clip.mul_(2).sub_(1) if inplace else clip * 2 - 1
    return clip


class ClipDataset(torch.utils.data.Dataset):
    """Samples ``{view: [N, C, K, size, size]}`` windows of videos from their view shards.

    ``train``: one random window per video and epoch, augmented as ``augmentation`` says
    ("pretrain" or "finetune", with ``color_jitter`` its probability of jittering a clip;
    see ``augment``); index it with (epoch, item). Otherwise every dense test window
    (``dense_starts``) is cut ``test_crops`` times (1: the central square of ``center_crop``
    times the short side; 5 and 10: test_crop_box), each cut an item, not augmented.
    """

    def __init__(self, videos: list[VideoRef], views_dir: str | os.PathLike, views: list[str],
                 sizes: dict[str, int], spec: ClipSpec, train: bool, seed: int = 0,
                 augmentation: str = "pretrain", color_jitter: float = 0.3, center_crop: float = 1.0,
                 test_crops: int = 1):
        if not videos:
            raise ValueError("ClipDataset: no videos to sample from")
        if test_crops not in TEST_CROPS or (train and test_crops != 1):
            raise ValueError(f"ClipDataset: test_crops {test_crops} is not one of {TEST_CROPS} (1 for training)")
        if augmentation not in AUGMENTATIONS:
            raise ValueError(f"ClipDataset: augmentation {augmentation!r} is not one of {AUGMENTATIONS}")
        if not 0 < center_crop <= 1:
            raise ValueError(f"ClipDataset: center_crop {center_crop} is not in (0, 1]")
        self.videos = videos
        self.views_dir = Path(views_dir)
        self.views = list(views)
        self.sizes = sizes
        self.spec = spec
        self.train = train
        self.seed = seed
        self.augmentation = augmentation
        self.color_jitter = color_jitter
        self.center_crop = center_crop
        self.test_crops = test_crops
        if train:
            self.items = [(index, None) for index in range(len(videos))]
        else:
            self.items = [(index, start) for index, video in enumerate(videos)
                          for start in dense_starts(video.num_frames, spec)]
        self._readers: dict[tuple[str, str], ShardReader] = {}
        self._pid = None

    def __getstate__(self) -> dict:
        # open HDF5 handles stay behind; worker processes open their own
        return {**self.__dict__, "_readers": {}, "_pid": None}

    def __len__(self) -> int:
        return len(self.items) * self.test_crops

    def reader(self, view: str, shard: str) -> ShardReader:
        """The open reader of a view shard, one per process: h5py handles do not survive a fork."""
        if self._pid != os.getpid():
            self._readers, self._pid = {}, os.getpid()
        key = (view, shard)
        if key not in self._readers:
            self._readers[key] = ShardReader(self.views_dir / view / f"{shard}.h5", view=view)
        return self._readers[key]

    def window(self, key: int | tuple[int, int]) -> tuple[int, int, int, np.ndarray, torch.Generator | None]:
        """Sample ``key``'s video index, window start, test crop (0 for training) and frame
        indices, and its generator after the start draw, from which every other draw of the
        sample comes (None for a test window: nothing random). ``key``: an item, or (epoch,
        item) for training, so that persistent worker processes get the epoch with each
        request (see EpochSampler)."""
        epoch, item = key if isinstance(key, tuple) else (0, key)
        item, crop = divmod(item, self.test_crops)
        video_index, start = self.items[item]
        video = self.videos[video_index]
        generator = None
        if self.train:
            generator = torch.Generator().manual_seed(sample_seed(self.seed, epoch, item))
            room = usable_frames(video.num_frames) - self.spec.span
            start = int(torch.randint(0, room + 1, (), generator=generator)) if room > 0 else 0
        return video_index, start, crop, window_indices(video.num_frames, self.spec, start), generator

    def sample_draws(self, frame_sizes: dict[str, tuple[int, int]], generator: torch.Generator | None,
                     crop: int = 0) -> dict[str, ViewDraws]:
        """Every draw of a sample after its window start, in the one order that ClipDataset
        and the device loader (cocon.data.device_clips) share: view by view in ``views``
        order, each view's draw_view (crop box, flip, rgb's jitter; for a test window, its
        test crop ``crop``). ``frame_sizes``: each view's stored (height, width), on which
        its crop box depends."""
        return {view: draw_view(view, *frame_sizes[view], self.spec.num_frames, generator, self.augmentation,
                                self.color_jitter, self.center_crop, crop) for view in self.views}

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        video_index, start, crop, indices, generator = self.window(key)
        video = self.videos[video_index]
        sample = {"label": video.label_index, "video": video_index, "start": start, "crop": crop}
        stored = {view: clip_tensor(view, self.reader(view, video.shard).read_frames(video.video_id, indices))
                  for view in self.views}
        draws = self.sample_draws({view: tuple(clip.shape[-2:]) for view, clip in stored.items()}, generator, crop)
        for view, clip in stored.items():
            clip = apply_draws(view, clip, self.sizes[view], draws[view])
            clip = normalize(view, clip, inplace=True)  # the clip apply_draws made: no one else holds it
            assert clip.shape[:2] == (self.spec.num_frames, VIEW_CHANNELS[view]), clip.shape
            sample[view] = to_blocks(clip, self.spec)
        return sample


def to_blocks(frames: torch.Tensor, spec: ClipSpec) -> torch.Tensor:
    """Sampled frames ``[..., N*K, C, H, W]`` as blocks ``[..., N, C, K, H, W]`` of K consecutive frames."""
    *lead, count, channels, height, width = frames.shape
    assert count == spec.num_frames, (count, spec)
    blocks = frames.reshape(*lead, spec.num_blocks, spec.block_length, channels, height, width)
    return blocks.transpose(-4, -3).contiguous()


class EpochSampler(torch.utils.data.Sampler):
    """Yields (epoch, item) keys in an order shuffled by (seed, epoch), this process's share
    of them when ``world_size`` > 1; every process gets the same number of whole batches
    (``batches``, the steps of an epoch). ``set_epoch(epoch, start_step)`` skips the first
    ``start_step`` batches of the epoch: a run resumed inside an epoch sees the rest of the
    same order."""

    def __init__(self, length: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        self.length, self.batch_size, self.seed = length, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start_step = 0, 0
        self.batches = length // (batch_size * world_size)
        if self.batches == 0:
            raise ValueError(f"{length} training videos make no whole batch of {batch_size} x {world_size} processes")

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        if not 0 <= start_step <= self.batches:
            raise ValueError(f"step {start_step} is not within an epoch of {self.batches} steps")
        self.epoch, self.start_step = epoch, start_step

    def __len__(self) -> int:
        return (self.batches - self.start_step) * self.batch_size

    def __iter__(self):
        generator = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch))
        order = torch.randperm(self.length, generator=generator)[: self.batches * self.batch_size * self.world_size]
        for item in order[self.rank::self.world_size][self.start_step * self.batch_size:].tolist():
            yield self.epoch, item
