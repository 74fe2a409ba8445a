"""The batched pretraining jitter (one op over a clip's frames) against the per-frame path,
and the device path (decode and augment a batch at once) against ClipDataset: the same
draws, in the same order, give the same output."""
import gc
import multiprocessing

import numpy as np
import pytest
import torch

from cocon.data import clips
from cocon.data.clips import (IMAGENET_STD, ClipDataset, ClipSpec, EpochSampler, VideoRef, apply_frame_jitter,
                              draw_frame_jitter, jitter_frames, jitter_frames_per_frame)
from cocon.data.device_clips import DeviceClips, StoredClips, collate_stored
from cocon.data.loader import ClipBatches
from cocon.data.shards import ShardWriter, encode_jpeg
from cocon.train.preemption import ignore_stop_signals


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


ATTRS = {key: 0 for key in ("label", "label_index", "fps", "num_frames", "orig_width", "orig_height", "width",
                            "height", "source_path")}


@pytest.fixture(scope="module")
def four_views(tmp_path_factory):
    """Shards of every view for a 40-frame and a 13-frame video (the second loops), the
    views at different sizes as real shards are."""
    root = tmp_path_factory.mktemp("views")
    rng = np.random.default_rng(0)
    # smooth rgb frames (a gradient that moves) as real video is; noise would make decoders disagree more
    rows, cols = np.mgrid[0:48, 0:64]
    writers = {view: ShardWriter(root / view / "00000.h5", view, {"shard": "00000"})
               for view in ("rgb", "flow", "pose", "seg")}
    for video, count in (("a", 40), ("b", 13)):
        frames = [np.stack([(rows * 4 + t * 3) % 256, (cols * 3 + t) % 256,
                            np.full_like(rows, rng.integers(0, 256))], axis=-1).astype(np.uint8)
                  for t in range(count)]
        writers["rgb"].add_video(video, [encode_jpeg(frame, 95) for frame in frames], ATTRS)
        writers["flow"].add_video(video, rng.integers(0, 256, (count - 1, 40, 56, 2), dtype=np.uint8), ATTRS)
        writers["pose"].add_video(video, rng.integers(0, 256, (count, 17, 24, 32), dtype=np.uint8), ATTRS)
        writers["seg"].add_video(video, rng.integers(0, 256, (count, 24, 32), dtype=np.uint8), ATTRS)
    for writer in writers.values():
        writer.close()
    return root, [VideoRef("a", "00000", 40, 0), VideoRef("b", "00000", 13, 1)]


VIEWS, SIZES = ["rgb", "flow", "pose", "seg"], {"rgb": 24, "flow": 24, "pose": 16, "seg": 16}


def assert_same_clips(batch: dict, expected: dict) -> None:
    """The device path's batch against ClipDataset's: rgb within a few levels of 255 of the
    JPEG decoders' rounding (far closer on average), the other views to float rounding."""
    for name in ("label", "video", "start", "crop"):
        assert torch.equal(batch[name], expected[name]), name
    for view in VIEWS:
        assert batch[view].shape == expected[view].shape, view
    difference = (batch["rgb"] - expected["rgb"]).abs() * max(IMAGENET_STD)  # in [0, 1] before normalising
    assert difference.max() < 6 / 255 and difference.mean() < 1 / 255
    for view in VIEWS[1:]:
        torch.testing.assert_close(batch[view], expected[view], atol=1e-6, rtol=0)


@pytest.mark.parametrize("augmentation", ["pretrain", "finetune"])
@pytest.mark.parametrize("train", [True, False], ids=["training", "test-windows"])
def test_device_clips_give_the_dataset_s_clips_for_every_view(four_views, augmentation, train):
    """The batched device path (run here on the CPU) reads the stored bytes, draws what
    ClipDataset draws in the same order and gives its clips, for every view."""
    root, refs = four_views
    # test windows with the ten test crops: the corners, and flipped (flow's u negated)
    dataset = ClipDataset(refs, root, VIEWS, SIZES, ClipSpec(3, 2, 2), train=train, seed=5,
                          augmentation=augmentation, color_jitter=0.5, center_crop=0.8, test_crops=1 if train else 10)
    keys = [(0, 0), (0, 1), (3, 0), (7, 1), (8, 1)] if train else list(range(len(dataset)))
    stored = StoredClips(dataset)
    batch = DeviceClips(dataset, "cpu")(collate_stored([stored[key] for key in keys]))
    expected = torch.utils.data.default_collate([dataset[key] for key in keys])
    assert batch["rgb"].shape == (len(keys), 3, 3, 2, 24, 24) and batch["pose"].shape == (len(keys), 3, 17, 2, 16, 16)
    assert_same_clips(batch, expected)
    if train:  # the draws differ between epochs: the comparison is not of unaugmented clips
        assert not torch.allclose(batch["rgb"][0], batch["rgb"][2], atol=0.1)


def test_a_resumed_epoch_gives_the_same_batches_with_either_loader(four_views):
    """ClipBatches over an EpochSampler resumed at a step: the cpu loader gives exactly the
    batches of the uninterrupted epoch from that step on, the device loader the same clips."""
    root, refs = four_views
    refs = refs * 4  # 8 items: 4 steps of 2
    dataset = ClipDataset(refs, root, VIEWS, SIZES, ClipSpec(3, 2, 2), train=True, seed=1)

    def epoch(loader: str, start_step: int) -> list[dict]:
        sampler = EpochSampler(len(dataset), 2, seed=1)
        sampler.set_epoch(2, start_step)
        return list(ClipBatches(dataset, loader, torch.device("cpu"), batch_size=2, sampler=sampler, drop_last=True))

    whole = epoch("cpu", 0)
    resumed_cpu, resumed_device = epoch("cpu", 3), epoch("device", 3)
    assert len(whole) == 4 and len(resumed_cpu) == len(resumed_device) == 1
    for name, value in whole[3].items():
        assert torch.equal(value, resumed_cpu[0][name]), name
    assert_same_clips(resumed_device[0], whole[3])


def test_the_persistent_workers_end_when_a_reference_cycle_frees_the_loader(four_views):
    """A stop signal's traceback keeps the training loop's frames in a reference cycle; when
    the cycle collector frees the loader, its workers (which ignore SIGTERM) must still end,
    or the process's exit would wait on them for ever."""
    root, refs = four_views
    dataset = ClipDataset(refs * 4, root, ["seg"], SIZES, ClipSpec(3, 2, 2), train=True, seed=1)
    before = set(multiprocessing.active_children())
    batches = ClipBatches(dataset, "device", torch.device("cpu"), batch_size=2,
                          sampler=EpochSampler(len(dataset), 2, seed=1), num_workers=1, persistent_workers=True,
                          multiprocessing_context="forkserver", worker_init_fn=ignore_stop_signals)
    next(iter(batches))
    workers = set(multiprocessing.active_children()) - before
    assert len(workers) == 1
    batches.cycle = batches  # freed by the cycle collector alone
    del batches
    gc.collect()
    for worker in workers:
        worker.join(timeout=30)
        assert not worker.is_alive()
