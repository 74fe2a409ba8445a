"""Clips decoded and augmented on the training device, a batch at a time (DESIGN.md section
10): a GPU consumes thousands of clips a second, more than per-clip CPU loaders give, so the
loader workers only read what is stored, and everything after that runs on the device in
batches (``pretrain.loader: device``, ``finetune.loader: device``; cocon.data.loader).

- ``StoredClips`` (in the loader workers, on the CPU): for a key of a ClipDataset, the
  window's stored frames as they are on disk (rgb's JPEG bytes, the other views' uint8
  arrays) and every draw of the sample (ClipDataset.window, ClipDataset.sample_draws: the
  same generator, the same order). A JPEG's size, which the rgb crop box depends on, is
  read from its header.
- ``collate_stored``: a batch of them, rgb's JPEGs of every clip in one byte tensor.
- ``DeviceClips`` (in the training process): the batch's JPEGs decoded in one
  ``torchvision.io.decode_jpeg`` call on the device (nvJPEG on CUDA), the other views moved
  there as uint8; each clip cropped, resized and flipped there; pretraining's per-frame
  jitter applied to every rgb frame of the batch in one op; normalised.

A key gives the clip ClipDataset gives, to the rounding of the JPEG decoder and of the
resize (a few levels of 255) for rgb and to float rounding for the other views; on the CPU
the same code runs, which is how it is tested.
"""
from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg

from cocon.data.clips import (ClipDataset, apply_clip_jitter, apply_frame_jitter, crop_and_flip, normalize, to_blocks,
                              to_view_tensor)


def jpeg_size(encoded: np.ndarray) -> tuple[int, int]:
    """(height, width) of a JPEG from its header, without decoding it."""
    width, height = Image.open(io.BytesIO(encoded.tobytes())).size
    return height, width


def stored_frame_size(view: str, frames: np.ndarray) -> tuple[int, int]:
    """(height, width) of a view's stored frames as shards hold them (VIEW_LAYOUTS)."""
    if view == "rgb":
        return jpeg_size(frames[0])
    return {"flow": frames.shape[1:3], "pose": frames.shape[2:4], "seg": frames.shape[1:3]}[view]


class StoredClips(torch.utils.data.Dataset):
    """``clips``' samples as stored and drawn, not yet decoded: ``{"label", "video", "start",
    "crop", "draws": {view: ViewDraws}, "frames": {view: ...}}``, where rgb's frames are the window's
    JPEG files (a list of uint8 arrays, a looped frame repeated) and the other views' a
    uint8 array of the window's frames."""

    def __init__(self, clips: ClipDataset):
        self.clips = clips

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        clips = self.clips
        video_index, start, crop, indices, generator = clips.window(key)
        video = clips.videos[video_index]
        first, stop = int(indices.min()), int(indices.max()) + 1
        frames = {}
        for view in clips.views:
            raw = clips.reader(view, video.shard).read_raw(video.video_id, first, stop)
            frames[view] = [raw[index - first] for index in indices.tolist()] if view == "rgb" \
                else np.ascontiguousarray(raw[indices - first])
        draws = clips.sample_draws({view: stored_frame_size(view, frames[view]) for view in clips.views}, generator,
                                   crop)
        return {"label": video.label_index, "video": video_index, "start": start, "crop": crop, "draws": draws,
                "frames": frames}


def collate_stored(samples: list[dict]) -> dict:
    """A batch of StoredClips samples: labels, videos, starts and crops as tensors, the draws as a
    list, rgb's JPEGs of every clip back to back in one uint8 tensor with their offsets (two
    tensors to pass from a worker, not one per frame), the other views a uint8 tensor per clip."""
    batch = {name: torch.tensor([sample[name] for sample in samples]) for name in ("label", "video", "start", "crop")}
    batch["draws"] = [sample["draws"] for sample in samples]
    for view in samples[0]["frames"]:
        if view == "rgb":
            encoded = [frame for sample in samples for frame in sample["frames"]["rgb"]]
            offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
            offsets[1:] = np.cumsum([len(frame) for frame in encoded])
            batch["rgb"] = (torch.from_numpy(np.concatenate(encoded)), torch.from_numpy(offsets))
        else:
            batch[view] = [torch.from_numpy(sample["frames"][view]) for sample in samples]
    return batch


class DeviceClips:
    """``clips(batch)``: a collate_stored batch of ``dataset``'s keys as the batch a DataLoader
    of ``dataset`` would give, ``{view: [B, N, C, K, S, S], "label": [B], "video": [B],
    "start": [B], "crop": [B]}``, made on ``device`` (label there too; video, start and crop
    stay on the host)."""

    def __init__(self, dataset: ClipDataset, device: str | torch.device):
        self.dataset = dataset
        self.device = torch.device(device)

    def _stored_clips(self, view: str, batch: dict) -> list[torch.Tensor]:
        """Each clip's frames on the device as ``[T, C, H, W]``: rgb decoded, uint8 (crop_resize
        resizes it as uint8 on the CPU, as ClipDataset does); the others float in [0, 1]."""
        frames = self.dataset.spec.num_frames
        if view == "rgb":
            data, offsets = batch["rgb"]
            bounds = offsets.tolist()
            encoded = [data[bounds[index]:bounds[index + 1]] for index in range(len(bounds) - 1)]
            decoded = decode_jpeg(encoded, mode=ImageReadMode.RGB, device=self.device)  # [3, H, W] uint8 each
            return [torch.stack(decoded[start:start + frames]) for start in range(0, len(decoded), frames)]
        return [to_view_tensor(view, clip.to(self.device, non_blocking=True)) for clip in batch[view]]

    def __call__(self, batch: dict) -> dict:
        dataset = self.dataset
        out = {"label": batch["label"].to(self.device, non_blocking=True), "video": batch["video"],
               "start": batch["start"], "crop": batch["crop"]}
        for view in dataset.views:
            draws = [sample_draws[view] for sample_draws in batch["draws"]]
            clips = torch.stack([crop_and_flip(view, clip, dataset.sizes[view], clip_draws)
                                 for clip, clip_draws in zip(self._stored_clips(view, batch), draws)])
            if view == "rgb" and draws[0].frame_jitter is not None:
                # pretraining's per-frame jitter: on a GPU every frame of the batch in one op; on
                # a CPU clip by clip, which stays in its caches (16 clips of 40 frames at 128 px:
                # 2.2 s in one op, 1.0 s clip by clip)
                factors = torch.cat([clip_draws.frame_jitter for clip_draws in draws]).to(self.device)
                clips_per_op = len(clips) if self.device.type == "cuda" else 1
                clips = torch.cat([apply_frame_jitter(part.flatten(0, 1), part_factors).view_as(part)
                                   for part, part_factors in zip(clips.split(clips_per_op),
                                                                 factors.split(clips_per_op * clips.shape[1]))])
            elif view == "rgb":
                clips = torch.stack([clip if clip_draws.clip_jitter is None
                                     else apply_clip_jitter(clip, clip_draws.clip_jitter)
                                     for clip, clip_draws in zip(clips, draws)])
            out[view] = to_blocks(normalize(view, clips, inplace=True), dataset.spec)
        return out
