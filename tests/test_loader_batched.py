"""The batched pretraining jitter (one op over a clip's frames) against the per-frame path,
and the device path (decode and augment a batch at once) against ClipDataset: the same
draws, in the same order, give the same output."""
import numpy as np
import pytest
import torch

from cocon.data import clips
from cocon.data.clips import (IMAGENET_STD, ClipDataset, ClipSpec, VideoRef, apply_frame_jitter, draw_frame_jitter,
                              jitter_frames, jitter_frames_per_frame)
from cocon.data.device_clips import DeviceRgbClips
from cocon.data.shards import ShardWriter, encode_jpeg


def test_batched_jitter_equals_per_frame_path_for_the_same_draws():
    clip = torch.rand(40, 3, 32, 40, generator=torch.Generator().manual_seed(1))
    clip[0, :, :4] = 0.5  # grey pixels (zero chroma) and pure colours: the hue's edge cases
    clip[1, 0], clip[1, 1:] = 1.0, 0.0
    for seed in range(4):
        batched_generator, frame_generator = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        batched = jitter_frames(clip, batched_generator)
        per_frame = jitter_frames_per_frame(clip, frame_generator)
        assert batched.shape == per_frame.shape == clip.shape
        torch.testing.assert_close(batched, per_frame, atol=1e-5, rtol=0)
        # both consumed the same draws: the generators are in the same state afterwards
        assert torch.equal(batched_generator.get_state(), frame_generator.get_state())


def test_one_batched_draw_equals_the_per_frame_draws_and_leaves_the_generator_alike():
    for frames in (1, 40, 300):
        batched, per_frame = torch.Generator().manual_seed(frames), torch.Generator().manual_seed(frames)
        factors = draw_frame_jitter(frames, batched)
        rows = []
        for _ in range(frames):
            values = [0.5 + torch.rand((), generator=per_frame).item() for _ in range(3)]
            values.append(-0.25 + 0.5 * torch.rand((), generator=per_frame).item())
            values.append(float(torch.rand((), generator=per_frame) < 0.5))
            rows.append(values)
        assert torch.equal(factors, torch.tensor(rows, dtype=torch.float64))
        assert torch.equal(batched.get_state(), per_frame.get_state())


def test_draws_follow_the_per_frame_order_and_distributions():
    factors = draw_frame_jitter(2000, torch.Generator().manual_seed(0))
    assert factors.shape == (2000, 5)
    for column, (low, high) in enumerate([(0.5, 1.5)] * 3 + [(-0.25, 0.25)]):
        assert factors[:, column].min() >= low and factors[:, column].max() <= high
        assert abs(factors[:, column].mean().item() - (low + high) / 2) < 0.03
    assert set(factors[:, 4].tolist()) == {0.0, 1.0} and abs(factors[:, 4].mean().item() - 0.5) < 0.05
    generator = torch.Generator().manual_seed(3)
    first = [clips._uniform(generator, 0.5, 1.5) for _ in range(3)] + [clips._uniform(generator, -0.25, 0.25)]
    assert torch.allclose(draw_frame_jitter(1, torch.Generator().manual_seed(3))[0, :4],
                          torch.tensor(first, dtype=torch.float64))


def test_greyed_frames_are_grey():
    clip = torch.rand(4, 3, 8, 8)
    factors = torch.tensor([[1.0, 1.0, 1.0, 0.1, 1.0], [1.0, 1.0, 1.0, 0.1, 0.0]] * 2, dtype=torch.float64)
    out = apply_frame_jitter(clip, factors)
    assert torch.equal(out[0, 0], out[0, 1]) and torch.equal(out[0, 1], out[0, 2])
    assert not torch.equal(out[1, 0], out[1, 1])


def test_device_clips_give_the_dataset_s_clips_for_the_same_keys(tmp_path):
    """The batched device path (run here on the CPU) draws what ClipDataset draws and gives
    its clips to the rounding of the JPEG decoder and the resize."""
    rng = np.random.default_rng(0)
    attrs = {key: 0 for key in ("label", "label_index", "fps", "num_frames", "orig_width", "orig_height", "width",
                                "height", "source_path")}
    # smooth frames (a gradient that moves) as real video is; noise would make decoders disagree more
    rows, cols = np.mgrid[0:48, 0:64]
    with ShardWriter(tmp_path / "rgb" / "00000.h5", "rgb", {"shard": "00000"}) as writer:
        for video, count in (("a", 40), ("b", 13)):
            frames = [np.stack([(rows * 4 + t * 3) % 256, (cols * 3 + t) % 256,
                                np.full_like(rows, rng.integers(0, 256))], axis=-1).astype(np.uint8)
                      for t in range(count)]
            writer.add_video(video, [encode_jpeg(frame, 95) for frame in frames], attrs)
    refs = [VideoRef("a", "00000", 40, 0), VideoRef("b", "00000", 13, 1)]
    dataset = ClipDataset(refs, tmp_path, ["rgb"], {"rgb": 24}, ClipSpec(3, 2, 2), train=True, seed=5)
    keys = [(0, 0), (0, 1), (3, 0), (7, 1)]
    batch = DeviceRgbClips(dataset, "cpu")(keys)
    expected = torch.stack([dataset[key]["rgb"] for key in keys])
    assert batch["rgb"].shape == expected.shape == (4, 3, 3, 2, 24, 24)
    assert batch["video"].tolist() == [0, 1, 0, 1] and batch["label"].tolist() == [0, 1, 0, 1]
    # in [0, 1] before normalising: within a few levels of 255 everywhere, far closer on average
    difference = (batch["rgb"] - expected).abs() * max(IMAGENET_STD)
    assert difference.max() < 6 / 255 and difference.mean() < 1 / 255


def test_device_clips_refuse_what_they_do_not_do(tmp_path):
    refs = [VideoRef("a", "00000", 40, 0)]
    for views, augmentation in ((["rgb"], "finetune"), (["seg"], "pretrain")):
        dataset = ClipDataset(refs, tmp_path, views, {"rgb": 24, "seg": 24}, ClipSpec(3, 2, 2), train=True,
                              augmentation=augmentation)
        with pytest.raises(ValueError, match="pretraining augmentation"):
            DeviceRgbClips(dataset, "cpu")
