"""Fine-tuning: the validation carve-out, freezing, a classifier that learns the demo, and
a rerun of a finished job from scratch that still resumes after a kill."""
import logging
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from cocon.config import load_schema, validate
from cocon.data.clips import ClipDataset, ClipSpec
from cocon.data.manifest import read_manifest
from cocon.train import checkpoints
from cocon.train.evaluate import write_report
from cocon.train.preemption import TrainingStopped
from cocon.train.finetune import FinetuneJob, build_classifier, freeze, run_finetuning, set_train_mode, split_videos
from tests.conftest import build_demo_views

TINY = {"width": 0.125, "num_blocks": 4, "pred_steps": 1, "block_length": 2, "frame_stride": 2,
        "input_size": {"rgb": 32, "flow": 32, "pose": 32, "seg": 32}, "gpus": 0}


def dataset_config(root: Path, **finetune) -> dict:
    dataset = validate({"layout": "demo", "root": str(root / "videos"), "test_fraction": 0.34,
                        "demo": {"num_classes": 3, "videos_per_class": 6, "num_frames": 24, "width": 64, "height": 48},
                        "frames": {"short_side": 48}, "flow": {"method": "farneback"}, "pretrain": TINY,
                        "finetune": {"epochs": 20, "milestones": [16], "batch_size": 4, "workers": 0, "gpus": 0,
                                     "val_fraction": 0.25, **finetune}},
                       load_schema("dataset.schema.yaml"), "tiny")
    dataset["name"] = "tiny"
    return dataset


@pytest.fixture(scope="module")
def demo_views(tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune")
    return build_demo_views(root, dataset_config(root))


def test_validation_is_carved_from_train_never_test(demo_views):
    rows = {row.video_id: row for row in read_manifest(demo_views / "manifest.tsv")}
    train, val, test = split_videos(demo_views / "manifest.tsv", 1, 0.25, seed=0)
    train_ids, val_ids, test_ids = ({video.video_id for video in part} for part in (train, val, test))
    assert not train_ids & val_ids and not val_ids & test_ids and not train_ids & test_ids
    assert all(rows[video].role(1) == "train" for video in train_ids | val_ids)
    assert test_ids == {video for video, row in rows.items() if row.role(1) == "test"}
    assert {rows[video].label_index for video in val_ids} == {0, 1, 2}, "every class is validated"
    assert split_videos(demo_views / "manifest.tsv", 1, 0.25, seed=0)[1] == val


@pytest.mark.parametrize("frozen", [["encoder"], ["encoder", "aggregator"]])
def test_frozen_modules_do_not_change_and_the_rest_does(demo_views, frozen):
    dataset = dataset_config(demo_views)
    torch.manual_seed(0)
    model = build_classifier(dataset, "flow", 3, None)
    frozen_modules = freeze(model, frozen)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    optimizer = torch.optim.Adam([param for param in model.parameters() if param.requires_grad], lr=1e-2)
    train, _, _ = split_videos(demo_views / "manifest.tsv", 1, 0.25, seed=0)
    clips = ClipDataset(train, demo_views / "views", ["flow"], TINY["input_size"], ClipSpec(4, 2, 2), train=True)
    batch = torch.utils.data.default_collate([clips[(0, item)] for item in range(4)])
    set_train_mode(model, frozen_modules)
    loss = torch.nn.functional.cross_entropy(model(batch["flow"]), batch["label"])
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    after = model.state_dict()
    for name, tensor in before.items():
        module = name.split(".")[1] if name.startswith("backbone.") else "head"
        changed = not torch.equal(tensor, after[name])
        if module in frozen:
            # weights and BatchNorm running statistics alike
            assert not changed, f"{name} changed although {module} is frozen"
        elif module == "head" or (module == "aggregator" and name.endswith("weight")):
            assert changed, f"{name} did not change"
    with pytest.raises(ValueError, match="finetune.freeze: 'predictor'"):
        freeze(model, ["predictor"])


def test_classifier_learns_the_demo_and_the_report_validates(demo_views, tmp_path, monkeypatch):
    built = []

    class RecordedClipDataset(ClipDataset):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(self)

    monkeypatch.setattr("cocon.train.finetune.ClipDataset", RecordedClipDataset)
    dataset = dataset_config(demo_views)
    job = FinetuneJob(dataset, "random", "flow", str(demo_views / "views"), str(demo_views / "manifest.tsv"), None,
                      str(tmp_path / "flow.pt"), str(tmp_path / "flow.scores.npz"), str(tmp_path / "state"), threads=2)
    run_finetuning(job)
    # DPC's protocol: clip-wide jitter for training, the centre crop for validation and test
    settings = dataset["finetune"]
    assert (settings["color_jitter"], settings["center_crop"]) == (0.3, 0.9333), "the schema's defaults"
    train_clips, val_clips, test_clips = built
    assert (train_clips.train, train_clips.augmentation, train_clips.color_jitter) == (True, "finetune", 0.3)
    assert [(clips.train, clips.center_crop) for clips in (val_clips, test_clips)] == [(False, 0.9333)] * 2
    with np.load(job.scores) as scores:
        labels, predictions = scores["labels"], scores["scores"].argmax(axis=1)
        assert len(labels) == 6
    # chance is 1/3 on three classes
    assert (predictions == labels).mean() >= 2 / 3
    state = checkpoints.load(job.output)
    assert state["val_top1"] >= 2 / 3 and 0 <= state["best_epoch"] < 20
    entries = {("random", "flow"): {"scores": job.scores, "checkpoint": None}}
    document = write_report(dataset, job.split, demo_views / "manifest.tsv", entries, tmp_path / "finetune.json",
                            tmp_path / "finetune.md", tmp_path / "details.json")
    assert {(row["method"], row["view"]) for row in document["results"]} == {("random", "flow"),
                                                                            ("random", "ensemble")}
    assert "| Random |" in (tmp_path / "finetune.md").read_text()


class Killed(Exception):
    """Stands for a kill of the job right after it saved the state of its first epoch."""


def test_a_forced_rerun_of_a_finished_job_starts_over_and_resumes_after_a_kill(demo_views, tmp_path, monkeypatch,
                                                                               caplog):
    caplog.set_level(logging.INFO, logger="cocon")
    job = FinetuneJob(dataset_config(demo_views), "random", "flow", str(demo_views / "views"),
                      str(demo_views / "manifest.tsv"), None, str(tmp_path / "flow.pt"),
                      str(tmp_path / "flow.scores.npz"), str(tmp_path / "state"), epochs=2, threads=1)
    last, metrics = tmp_path / "state" / "last.pt", tmp_path / "state" / "metrics.csv"
    run_finetuning(job)
    first = checkpoints.load(job.output)
    with np.load(job.scores) as scores:
        first_scores = scores["scores"]
    assert checkpoints.load(last)["finished"]
    old_events = set((tmp_path / "state" / "tensorboard").iterdir())

    # snakemake --forcerun finetune deletes both outputs; the forced job is killed after epoch 0
    Path(job.output).unlink()
    Path(job.scores).unlink()
    save = checkpoints.save_training_state

    def save_then_die(path, fingerprint, epoch, step, *args, **kwargs):
        save(path, fingerprint, epoch, step, *args, **kwargs)
        raise Killed

    monkeypatch.setattr(checkpoints, "save_training_state", save_then_die)
    caplog.clear()
    with pytest.raises(Killed):
        run_finetuning(job)
    monkeypatch.undo()
    assert f"starting over: {last} belongs to a finished run" in caplog.text and "epochs 0..1" in caplog.text
    assert [line.split(",")[0] for line in metrics.read_text().splitlines()[1:]] == ["0"], "the new run's alone"
    assert checkpoints.load(tmp_path / "state" / "best.pt")["epoch"] == 0
    assert not old_events & set((tmp_path / "state" / "tensorboard").iterdir())

    # the killed forced run resumes from its own state, not the finished one
    caplog.clear()
    run_finetuning(job)
    assert f"resuming at epoch 1, step 0 of 2 from {last}" in caplog.text and "epochs 1..1" in caplog.text
    second = checkpoints.load(job.output)
    assert [row["epoch"] for row in second["history"]] == [0, 1]
    for metric in ("loss", "val_top1"):
        assert [row[metric] for row in second["history"]] == [row[metric] for row in first["history"]], metric
    assert second["best_epoch"] == first["best_epoch"]
    # a run from scratch with the same seed: the first run's weights and test scores
    assert first["model"].keys() == second["model"].keys()
    for name, tensor in first["model"].items():
        assert torch.equal(tensor, second["model"][name]), name
    with np.load(job.scores) as scores:
        assert np.array_equal(scores["scores"], first_scores)
    assert checkpoints.load(last)["finished"]


def test_seed_summary_gives_mean_and_spread():
    from cocon.train.evaluate import seeds_markdown

    documents = [{"dataset": f"demo{seed}", "results": [{"method": "cocon", "view": "rgb", "top1": top1}]}
                 for seed, top1 in enumerate((0.5, 0.7, 0.6))]
    assert "| CoCon | 60.0 ± 10.0 | — |" in seeds_markdown(documents)


@pytest.mark.parametrize("loader, view", [("cpu", "flow"), ("device", "rgb")])
def test_a_signal_inside_an_epoch_resumes_to_the_same_model_and_scores(demo_views, tmp_path, monkeypatch, caplog,
                                                                       loader, view):
    """Either loader: the device loader draws fine-tuning's clip-wide jitter as ClipDataset does."""
    caplog.set_level(logging.INFO, logger="cocon")

    def finetune_job(folder: str) -> FinetuneJob:
        out = tmp_path / folder
        return FinetuneJob(dataset_config(demo_views, workers=1, loader=loader), "random", view,
                           str(demo_views / "views"), str(demo_views / "manifest.tsv"), None, str(out / f"{view}.pt"),
                           str(out / f"{view}.scores.npz"), str(out / "state"), epochs=2, threads=1)

    straight, stopped = finetune_job("straight"), finetune_job("stopped")
    run_finetuning(straight)

    class SignalAtSecondStep(torch.nn.CrossEntropyLoss):
        calls = 0

        def forward(self, *args):
            SignalAtSecondStep.calls += 1
            if SignalAtSecondStep.calls == 2:
                os.kill(os.getpid(), signal.SIGUSR1)
            return super().forward(*args)

    monkeypatch.setattr(torch.nn, "CrossEntropyLoss", SignalAtSecondStep)
    with pytest.raises(TrainingStopped):
        run_finetuning(stopped)
    monkeypatch.undo()
    last = Path(stopped.state_dir) / "last.pt"
    # 2 steps per epoch: stopped after the last step of epoch 0, before its precise BN and validation
    assert f"SIGUSR1 received: saved the state at epoch 0, step 2 of 2 to {last}" in caplog.text
    run_finetuning(stopped)
    assert f"resuming at epoch 0, step 2 of 2 from {last}" in caplog.text
    expected, actual = checkpoints.load(straight.output), checkpoints.load(stopped.output)
    for name, tensor in expected["model"].items():
        assert torch.equal(tensor, actual["model"][name]), name
    for metric in ("loss", "train_top1", "val_top1"):
        assert [row[metric] for row in actual["history"]] == [row[metric] for row in expected["history"]], metric
    with np.load(straight.scores) as first, np.load(stopped.scores) as second:
        assert np.array_equal(first["scores"], second["scores"])


def _score_share(rank: int, world_size: int, rendezvous: str, views: Path, out: Path) -> None:
    import torch.distributed as dist

    from cocon.train.distributed import Runtime
    from cocon.train.finetune import dense_scores, shard
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world_size)
    try:
        runtime = Runtime(rank=rank, world_size=world_size, device=torch.device("cpu"), control=dist.group.WORLD)
        classifier, test = _test_scoring(views)
        dataset = ClipDataset(shard(test, runtime), views / "views", ["flow"], {"flow": 32}, ClipSpec(4, 2, 2),
                              train=False, center_crop=0.8, test_crops=5)
        scores = dense_scores(classifier, dataset, len(test), 3, runtime)
        if rank == 0:
            np.savez(out, videos=scores.videos, clips=scores.clips, clip_videos=scores.clip_videos,
                     clip_starts=scores.clip_starts)
    finally:
        dist.destroy_process_group()


def _test_scoring(views: Path):
    torch.manual_seed(0)
    classifier = build_classifier(dataset_config(views), "flow", 3, None).eval()
    _, _, test = split_videos(views / "manifest.tsv", 1, 0.25, 0)
    return classifier, test


def test_dense_scores_in_two_processes_equal_one_process(demo_views, tmp_path):
    from cocon.train.distributed import Runtime
    from cocon.train.finetune import dense_scores
    classifier, test = _test_scoring(demo_views)
    dataset = ClipDataset(test, demo_views / "views", ["flow"], {"flow": 32}, ClipSpec(4, 2, 2), train=False,
                          center_crop=0.8, test_crops=5)
    alone = dense_scores(classifier, dataset, len(test), 3, Runtime(rank=0, world_size=1, device=torch.device("cpu")))
    torch.multiprocessing.spawn(_score_share, args=(2, str(tmp_path / "rendezvous"), demo_views, tmp_path / "two.npz"),
                                nprocs=2)
    two = np.load(tmp_path / "two.npz")
    # every video's windows come back in the order of one process, each under its own index
    np.testing.assert_array_equal(two["clip_videos"], alone.clip_videos)
    np.testing.assert_array_equal(two["clip_starts"], alone.clip_starts)
    np.testing.assert_allclose(two["clips"], alone.clips, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(two["videos"], alone.videos, rtol=1e-5, atol=1e-7)
    assert len(set(alone.clip_videos.tolist())) == len(test) >= 3
