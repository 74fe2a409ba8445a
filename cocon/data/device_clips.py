"""Pretraining rgb clips decoded and augmented on a device, a batch at a time (DESIGN.md
section 10): a GPU consumes thousands of clips a second, more than per-clip CPU loaders
give, so the stored JPEGs go to the device as bytes and everything after reading them
runs there in batches.

For a batch of (epoch, item) keys of a pretraining rgb ClipDataset, ``DeviceRgbClips``
reads each window's JPEG bytes from the shard (CPU, h5py), decodes every frame of the
batch in one ``torchvision.io.decode_jpeg`` call on the device (nvJPEG on CUDA), then
crops, resizes and flips each clip and applies the per-frame colour jitter and greying
to all frames of the batch in one op, and normalises. Every draw (window start, crop box,
flip, jitter factors) comes from the sample's own generator in ClipDataset's order, so a
key gives the clip ClipDataset gives, to the rounding of the JPEG decoder and of the
resize (a few levels of 255); on the CPU the same code runs, which is how it is tested.
"""
from __future__ import annotations

import torch
import torchvision.transforms.v2.functional as TF
from torchvision.io import ImageReadMode, decode_jpeg

from cocon.data.clips import (VIEW_CHANNELS, ClipDataset, apply_frame_jitter, crop_box, crop_resize, draw_frame_jitter,
                              normalize, sample_seed, usable_frames, window_indices)


class DeviceRgbClips:
    """``clips(keys)`` -> ``{"rgb": [B, N, 3, K, S, S], "label": [B], "video": [B]}`` on ``device``."""

    def __init__(self, dataset: ClipDataset, device: str | torch.device):
        if not (dataset.train and dataset.views == ["rgb"] and dataset.augmentation == "pretrain"):
            raise ValueError("DeviceRgbClips: a training ClipDataset of the rgb view with pretraining augmentation")
        self.dataset = dataset
        self.device = torch.device(device)

    def _window(self, epoch: int, item: int) -> tuple[torch.Generator, int, list[torch.Tensor]]:
        """The sample's generator after its start draw, its video index and the JPEG bytes of its frames."""
        dataset = self.dataset
        video_index, _ = dataset.items[item]
        video = dataset.videos[video_index]
        generator = torch.Generator().manual_seed(sample_seed(dataset.seed, epoch, item))
        room = usable_frames(video.num_frames) - dataset.spec.span
        start = int(torch.randint(0, room + 1, (), generator=generator)) if room > 0 else 0
        indices = window_indices(video.num_frames, dataset.spec, start)
        first = int(indices.min())
        raw = dataset.reader("rgb", video.shard).read_raw(video.video_id, first, int(indices.max()) + 1)
        return generator, video_index, [torch.from_numpy(raw[index - first]) for index in indices.tolist()]

    def __call__(self, keys: list[tuple[int, int]]) -> dict:
        dataset, spec, size = self.dataset, self.dataset.spec, self.dataset.sizes["rgb"]
        windows = [self._window(epoch, item) for epoch, item in keys]
        encoded = [frame for _, _, frames in windows for frame in frames]
        decoded = decode_jpeg(encoded, mode=ImageReadMode.RGB, device=self.device)  # [3, H, W] uint8 each
        clips, factors = [], []
        for number, (generator, _, _) in enumerate(windows):
            frames = torch.stack(decoded[number * spec.num_frames:(number + 1) * spec.num_frames])  # [T, 3, H, W]
            clip = crop_resize(frames, crop_box(frames.shape[-2], frames.shape[-1], generator), size)
            if torch.rand((), generator=generator) < 0.5:
                clip = TF.hflip(clip)
            clips.append(clip)
            factors.append(draw_frame_jitter(spec.num_frames, generator))
        batch = normalize("rgb", apply_frame_jitter(torch.cat(clips), torch.cat(factors).to(self.device)), inplace=True)
        count = len(keys)
        assert batch.shape == (count * spec.num_frames, VIEW_CHANNELS["rgb"], size, size), batch.shape
        # [B*N*K, C, S, S] -> [B, N, C, K, S, S]: blocks of K consecutive sampled frames
        blocks = batch.reshape(count, spec.num_blocks, spec.block_length, 3, size, size).transpose(2, 3)
        videos = [video_index for _, video_index, _ in windows]
        return {"rgb": blocks.contiguous(), "video": torch.tensor(videos),
                "label": torch.tensor([dataset.videos[index].label_index for index in videos])}
