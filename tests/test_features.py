"""The features stage: per-video context features equal the average over the video's dense
windows, block features cover the whole test video, the encoder runs once per window and
block, a pretrained checkpoint's weights are the ones used, and the file round-trips."""
from pathlib import Path

import numpy as np
import pytest
import torch

from cocon.analysis.features import (ALIGNMENT_BLOCKS, FeatureSet, FeaturesJob, alignment_indices, block_features,
                                     compute_features, load_encoder)
from cocon.config import load_schema, validate
from cocon.data.clips import ClipDataset, ClipSpec, augment, clip_tensor, dense_starts, normalize, split_videos
from cocon.data.shards import ShardReader
from cocon.losses import pool_blocks
from cocon.train import checkpoints
from cocon.train.pretrain import build_model, model_config
from tests.conftest import build_demo_views

TINY = {"width": 0.125, "num_blocks": 4, "pred_steps": 1, "block_length": 2, "frame_stride": 2,
        "input_size": {"rgb": 32, "flow": 32, "pose": 16, "seg": 16}, "gpus": 0}


def dataset_config(root: Path) -> dict:
    dataset = validate({"layout": "demo", "root": str(root / "videos"), "test_fraction": 0.34,
                        "demo": {"num_classes": 3, "videos_per_class": 3, "num_frames": 40, "width": 64,
                                 "height": 48},
                        "frames": {"short_side": 48}, "flow": {"method": "farneback"}, "pretrain": TINY,
                        "finetune": {"val_fraction": 0.34, "gpus": 0}},
                       load_schema("dataset.schema.yaml"), "tiny")
    dataset["name"] = "tiny"
    return dataset


@pytest.fixture(scope="module")
def demo_views(tmp_path_factory):
    root = tmp_path_factory.mktemp("features")
    return build_demo_views(root, dataset_config(root))


def job(root: Path, view: str, checkpoint=None, init="random") -> FeaturesJob:
    return FeaturesJob(dataset_config(root), init, view, str(root / "views"), str(root / "manifest.tsv"), checkpoint,
                       str(root / "features" / f"{view}.npz"), batch_size=3, threads=1)


def test_alignment_blocks_cover_the_video_evenly():
    indices = alignment_indices(num_frames=181, block_length=5)
    assert indices.shape == (ALIGNMENT_BLOCKS, 5)
    assert indices[0, 0] == 0 and indices[-1, -1] == 179  # the last usable frame (flow has 180)
    assert np.all(np.diff(indices.reshape(-1)) > 0)
    # a video shorter than 18 x 5 frames repeats frames, never leaves its range
    short = alignment_indices(num_frames=30, block_length=5)
    assert short.min() == 0 and short.max() == 28 and np.all(np.diff(short.reshape(-1)) >= 0)


def test_context_is_the_mean_over_dense_windows_and_roles_follow_the_split(demo_views):
    features = compute_features(job(demo_views, "flow"))
    dataset = dataset_config(demo_views)
    train, val, test = split_videos(demo_views / "manifest.tsv", 1, 0.34, 0)
    assert list(features.video_ids) == [video.video_id for video in train + val + test]
    assert list(features.roles) == ["train"] * len(train) + ["val"] * len(val) + ["test"] * len(test)
    assert len(val) > 0 and len(test) == 3
    spec = ClipSpec(4, 2, 2)
    assert features.context.shape == (9, 32) and features.context.dtype == np.float32
    # each video's windows, counted as testing cuts them
    assert [int(count) for count in features.windows] == [len(dense_starts(video.num_frames, spec))
                                                          for video in train + val + test]
    assert features.windows.max() > 1, "the demo videos should span several windows"

    model, _ = load_encoder(dataset, "flow", None)
    video = test[0]
    clips = ClipDataset([video], demo_views / "views", ["flow"], {"flow": 32}, spec, train=False,
                        center_crop=dataset["finetune"]["center_crop"])
    with torch.no_grad():
        expected = torch.stack([model.context(clips[item]["flow"][None]).mean(dim=(2, 3))[0]
                                for item in range(len(clips))]).mean(dim=0)
    index = list(features.video_ids).index(video.video_id)
    np.testing.assert_allclose(features.context[index], expected.numpy(), rtol=1e-4, atol=1e-5)
    assert list(features.block_video_ids) == [video.video_id for video in test]
    assert features.blocks.shape == (3, ALIGNMENT_BLOCKS, 32)


def test_alignment_blocks_are_pooled_as_the_losses_pool_them_at_s4(demo_views):
    """At 128 px the encoder's grid is 4 x 4: z' is the 2x2 max-pool then the mean
    (pool_blocks, what Lsync and Lsim train on), not the plain mean over locations."""
    dataset = dataset_config(demo_views)
    settings = {**dataset["pretrain"], "input_size": {**dataset["pretrain"]["input_size"], "rgb": 128}}
    torch.manual_seed(0)
    model = build_model(settings, "rgb").eval()
    _, _, test = split_videos(demo_views / "manifest.tsv", 1, 0.34, 0)
    video, crop = test[0], dataset["finetune"]["center_crop"]
    blocks = block_features(model, [video], demo_views / "views", "rgb", 128, 2, crop, torch.device("cpu"))
    with ShardReader(demo_views / "views" / "rgb" / f"{video.shard}.h5", view="rgb") as reader:
        frames = reader.read_frames(video.video_id, alignment_indices(video.num_frames, 2).reshape(-1))
    clip = normalize("rgb", augment("rgb", clip_tensor("rgb", frames), 128, None, center_crop=crop))  # [T, C, H, W]
    with torch.no_grad():
        z = model.encode(clip.reshape(ALIGNMENT_BLOCKS, 2, *clip.shape[1:]).transpose(1, 2)[None])
    assert z.shape[-2:] == (4, 4)
    np.testing.assert_allclose(blocks[0], pool_blocks(z)[0].numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(blocks[0], z.mean(dim=(3, 4))[0].numpy(), atol=1e-4), "the plain mean is another pooling"


def test_the_encoder_runs_once_per_window_and_block(demo_views, monkeypatch):
    encoded = []
    original = load_encoder

    def counting_encoder(*args, **kwargs):
        model, geometry = original(*args, **kwargs)
        model.encoder.register_forward_hook(lambda module, inputs, output: encoded.append(inputs[0].shape[0]))
        return model, geometry

    monkeypatch.setattr("cocon.analysis.features.load_encoder", counting_encoder)
    features = compute_features(job(demo_views, "rgb"))
    # N = 4 blocks per window; 18 blocks per test video
    assert sum(encoded) == 4 * int(features.windows.sum()) + ALIGNMENT_BLOCKS * len(features.block_video_ids)


def test_a_checkpoint_is_loaded_and_the_file_round_trips(demo_views, tmp_path):
    dataset = dataset_config(demo_views)
    torch.manual_seed(123)
    model = build_model(dataset["pretrain"], "flow")
    path = tmp_path / "flow.pt"
    checkpoints.save({"model": model.state_dict(), "model_config": model_config(dataset["pretrain"], "flow")}, path)
    pretrained = compute_features(job(demo_views, "flow", checkpoint=str(path), init="tiny/cpc"))
    random = compute_features(job(demo_views, "flow"))
    assert not np.allclose(pretrained.context, random.context), "the checkpoint's weights were not used"
    assert pretrained.checkpoint == str(path) and pretrained.init == "tiny/cpc"

    pretrained.save(tmp_path / "features.npz")
    loaded = FeatureSet.load(tmp_path / "features.npz")
    for name in ("video_ids", "labels", "roles", "context", "windows", "block_video_ids", "blocks"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(pretrained, name))
    assert (loaded.init, loaded.view, loaded.split, loaded.checkpoint) == ("tiny/cpc", "flow", 1, str(path))


def test_a_damaged_or_missing_features_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.npz: features not found"):
        FeatureSet.load(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    np.savez(bad, context=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="bad.npz: not a features file"):
        FeatureSet.load(bad)
