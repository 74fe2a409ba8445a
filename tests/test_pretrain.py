"""The pretraining loop: CPC and CoCon on tiny models, the validation loss the lr plateau
watches, resume after a kill, a rerun of a finished job from scratch, the distributed
path, and non-finite losses."""
import csv
import dataclasses
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import yaml

from cocon.config import load_schema, validate
from cocon.data.clips import ClipDataset, ClipSpec, split_videos
from cocon.data.manifest import read_manifest
from cocon.losses import cocon_loss, dense_nce_accuracy, pool_blocks
from cocon.train import checkpoints, launch as launching, pretrain
from cocon.train.distributed import Runtime, setup, shutdown
from cocon.train.preemption import TrainingStopped
from cocon.train.pretrain import (
    METHODS, MultiViewDPC, NonFiniteLossError, PretrainJob, _losses, build_model, load_pretrained, run_pretraining,
    validation_batches, validation_metrics,
)
from tests.conftest import REPO, build_demo_views

TINY = {"width": 0.125, "num_blocks": 4, "pred_steps": 1, "block_length": 2, "frame_stride": 2,
        "input_size": {"rgb": 32, "flow": 32, "pose": 32, "seg": 32}, "batch_size": 4, "workers": 0, "gpus": 0,
        "plateau_patience": 1}


def tiny_dataset(root: Path, **pretrain) -> dict:
    dataset = validate({"layout": "demo", "root": str(root / "videos"), "test_fraction": 0.25,
                        "demo": {"num_classes": 3, "videos_per_class": 4, "num_frames": 28, "width": 64, "height": 48},
                        "frames": {"short_side": 48}, "flow": {"method": "farneback"},
                        "pretrain": {**TINY, **pretrain}}, load_schema("dataset.schema.yaml"), "tiny")
    dataset["name"] = "tiny"
    return dataset


@pytest.fixture(scope="module")
def tiny_views(tmp_path_factory):
    """rgb and flow shards of a 12-video demo set (9 for training); 28 frames give 2 dense
    windows a video, so that the one video validation carves has a batch of 2."""
    root = tmp_path_factory.mktemp("pretrain")
    return build_demo_views(root, tiny_dataset(root))


def job(root: Path, tmp: Path, method: str, views: list[str], epochs: int, init=None, **pretrain) -> PretrainJob:
    return PretrainJob(tiny_dataset(root, **pretrain), method, views, str(root / "views"), str(root / "manifest.tsv"),
                       str(tmp / f"{method}-{'+'.join(views)}.pt"), str(tmp / f"{method}.state"),
                       init=init, epochs=epochs, threads=1)


def test_cpc_then_cocon(tiny_views, tmp_path):
    for view in ("rgb", "flow"):
        run_pretraining(job(tiny_views, tmp_path, "cpc", [view], epochs=2))
    init = {view: str(tmp_path / f"cpc-{view}.pt") for view in ("rgb", "flow")}
    run_pretraining(job(tiny_views, tmp_path, "cocon", ["rgb", "flow"], epochs=2, init=init))
    for view in ("rgb", "flow"):
        model, state = load_pretrained(tmp_path / "cocon-rgb+flow.pt", view)
        assert state["method"] == "cocon" and state["views"] == ["rgb", "flow"] and state["epoch"] == 1
        assert state["model_config"]["view"] == view
        assert {"cpc/rgb", "cpc/flow", "sync/flow-rgb", "sim/flow-rgb", "top1/rgb"} <= set(state["history"][-1])
        # joint training moved the weights away from the cpc initialisation
        cpc_model, _ = load_pretrained(init[view])
        cpc_weights = cpc_model.state_dict()
        assert any(not torch.equal(tensor, cpc_weights[name]) for name, tensor in model.state_dict().items())
    metrics = (tmp_path / "cocon.state" / "metrics.csv").read_text().splitlines()
    assert len(metrics) == 3 and metrics[0].startswith("epoch,lr,loss")
    assert any((tmp_path / "cocon.state" / "tensorboard").iterdir())


def test_method_needs_the_right_number_of_views(tiny_views, tmp_path):
    with pytest.raises(ValueError, match="method 'cocon' needs several views"):
        run_pretraining(job(tiny_views, tmp_path, "cocon", ["rgb"], epochs=1))


def test_plateau_watches_the_validation_loss_of_videos_carved_from_the_train_split(tiny_views, tmp_path,
                                                                                  monkeypatch):
    datasets = []

    class RecordingClipDataset(ClipDataset):
        def __init__(self, videos, *args, train, **kwargs):
            datasets.append((train, {video.video_id for video in videos}))
            super().__init__(videos, *args, train=train, **kwargs)

    monkeypatch.setattr(pretrain, "ClipDataset", RecordingClipDataset)
    # a quarter of each class's 3 train videos: 1 per class, 3 videos of 2 windows, batches of 4 and 2
    cpc = job(tiny_views, tmp_path, "cpc", ["rgb"], epochs=3, val_fraction=0.25)
    run_pretraining(cpc)
    (training, trained_on), (validating, validated_on) = datasets
    assert training and not validating
    rows = [row for row in read_manifest(tiny_views / "manifest.tsv") if row.ok]
    train_part = {row.video_id for row in rows if row.role(1) == "train"}
    assert len(validated_on) == 3 and not trained_on & validated_on and trained_on | validated_on == train_part

    with open(tmp_path / "cpc.state" / "metrics.csv") as handle:
        metrics = list(csv.DictReader(handle))
    assert len(metrics) == 3 and {"val_loss", "val_cpc/rgb", "val_top1/rgb", "val_seconds"} <= set(metrics[0])
    val_losses = [float(row["val_loss"]) for row in metrics]
    train_losses = [float(row["loss"]) for row in metrics]
    best = checkpoints.load(tmp_path / "cpc.state" / "last.pt")["scheduler"]["best"]
    # the plateau's best is a validation loss, the lowest up to its relative threshold (1e-4)
    assert best in val_losses and best not in train_losses and min(val_losses) >= best * (1 - 1e-4)


def test_validation_batches_are_fixed_and_never_a_single_clip():
    batches = validation_batches(9, 4, seed=0)
    assert batches == validation_batches(9, 4, seed=0)
    assert [len(batch) for batch in batches] == [4, 4]  # the ninth clip alone would have no negatives
    assert len(set(sum(batches, []))) == 8
    assert [len(batch) for batch in validation_batches(10, 4, seed=0)] == [4, 4, 2]
    assert sorted(sum(validation_batches(10, 4, seed=0), [])) == list(range(10))


def test_too_few_validation_clips_fail_before_training(tiny_views, tmp_path):
    # a window of 8 frames 1 in 3 spans 22 frames: the one carved video of 28 has 1 window
    with pytest.raises(ValueError, match=r"pretrain.val_fraction 0.05 carves 1 validation video\(s\) with 1 "
                                         r"window\(s\) from 9 train videos; .* at least 2 windows"):
        run_pretraining(job(tiny_views, tmp_path, "cpc", ["rgb"], epochs=1, frame_stride=3))
    assert not (tmp_path / "cpc.state").exists()


def _cli(root: Path, out: Path, epochs: int, **pretrain) -> list[str]:
    config = out / "tiny.yaml"
    dataset = tiny_dataset(root, **pretrain)
    config.write_text(yaml.safe_dump({key: dataset[key] for key in ("layout", "root", "test_fraction", "demo",
                                                                     "pretrain")}))
    return [str(Path(sys.executable).with_name("cocon")), "pretrain", "--dataset", str(config), "--method", "cpc",
            "--views-dir", str(root / "views"), "--manifest", str(root / "manifest.tsv"),
            "--views", "rgb", "--out", str(out / 'rgb.pt'), "--state", str(out / "state"), "--epochs", str(epochs)]


def test_resume_after_kill_matches_an_uninterrupted_run(tiny_views, tmp_path):
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    for folder in (straight, killed):
        folder.mkdir()
    # a loader worker process: persistent workers start once per run, and must not shift the
    # random numbers dropout draws in a resumed run
    subprocess.run(_cli(tiny_views, straight, 4, workers=1), check=True, capture_output=True, env=environment)
    # a session of its own: the kill takes its loader processes too, as a killed job's
    process = subprocess.Popen(_cli(tiny_views, killed, 4, workers=1), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env=environment, start_new_session=True)
    state = killed / "state" / "last.pt"
    deadline = time.time() + 300
    while not state.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (killed / "rgb.pt").exists(), "the run finished before it could be killed"
    epoch_at_kill = checkpoints.load(state)["epoch"]
    assert epoch_at_kill < 3
    resumed = subprocess.run(_cli(tiny_views, killed, 4, workers=1), check=True, capture_output=True, text=True,
                             env=environment)
    assert re.search(rf"resuming at epoch {epoch_at_kill + 1}, step 0 of \d+ from {state}", resumed.stderr)
    expected, actual = checkpoints.load(straight / "rgb.pt"), checkpoints.load(killed / "rgb.pt")
    assert expected["model"].keys() == actual["model"].keys()
    for name, tensor in expected["model"].items():
        assert torch.equal(tensor, actual["model"][name]), name
    for metric in ("loss", "val_loss"):
        assert [row[metric] for row in expected["history"]] == [row[metric] for row in actual["history"]], metric


class Killed(Exception):
    """Stands for a kill of the job at a chosen point."""


def kill_after_epoch(monkeypatch, killed_epoch: int) -> None:
    """The next run dies right after saving the state of ``killed_epoch``."""
    save = checkpoints.save_training_state

    def save_then_die(path, fingerprint, epoch, step, *args, **kwargs):
        save(path, fingerprint, epoch, step, *args, **kwargs)
        if epoch == killed_epoch and step == 0:
            raise Killed(f"killed after epoch {epoch}")

    monkeypatch.setattr(checkpoints, "save_training_state", save_then_die)


def assert_same_weights(expected: dict, actual: dict) -> None:
    assert expected.keys() == actual.keys()
    for name, tensor in expected.items():
        assert torch.equal(tensor, actual[name]), name


def test_a_forced_rerun_of_a_finished_cpc_job_trains_every_epoch_again(tiny_views, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="cocon")
    cpc = job(tiny_views, tmp_path, "cpc", ["rgb"], epochs=2)
    state_dir = Path(cpc.state_dir)
    run_pretraining(cpc)
    first = checkpoints.load(cpc.output)
    assert checkpoints.load(state_dir / "last.pt")["finished"]
    old_events = set((state_dir / "tensorboard").iterdir())
    # snakemake --forcerun pretrain_cpc: the output is deleted and the job runs again
    Path(cpc.output).unlink()
    caplog.clear()
    run_pretraining(cpc)
    assert f"starting over: {state_dir / 'last.pt'} belongs to a finished run" in caplog.text
    assert "epochs 0..1" in caplog.text and "resuming" not in caplog.text
    second = checkpoints.load(cpc.output)
    assert [row["epoch"] for row in second["history"]] == [0, 1]
    # a run from scratch with the same seed: the first run's weights and losses
    assert_same_weights(first["model"], second["model"])
    assert [row["val_loss"] for row in second["history"]] == [row["val_loss"] for row in first["history"]]
    with open(state_dir / "metrics.csv") as handle:
        assert [row["epoch"] for row in csv.DictReader(handle)] == ["0", "1"]
    events = set((state_dir / "tensorboard").iterdir())
    assert events and not events & old_events, "the first run's curves were started over"
    assert checkpoints.load(state_dir / "last.pt")["finished"]


def test_a_kill_between_the_output_and_the_finished_mark_is_harmless(tiny_views, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="cocon")
    cpc = job(tiny_views, tmp_path, "cpc", ["rgb"], epochs=2)
    last = Path(cpc.state_dir) / "last.pt"

    def die(path):
        raise Killed("killed after writing the output")

    monkeypatch.setattr(checkpoints, "mark_finished", die)
    with pytest.raises(Killed):
        run_pretraining(cpc)
    monkeypatch.undo()
    first = checkpoints.load(cpc.output)
    assert "finished" not in checkpoints.load(last)
    # snakemake --rerun-incomplete deletes the output of the killed job and runs it again:
    # it resumes after the last epoch, trains nothing and writes the same output
    Path(cpc.output).unlink()
    caplog.clear()
    run_pretraining(cpc)
    assert f"resuming at epoch 2, step 0 of 2 from {last}" in caplog.text and "epochs 2..1" in caplog.text
    second = checkpoints.load(cpc.output)
    assert_same_weights(first["model"], second["model"])
    assert second["history"] == first["history"]
    assert checkpoints.load(last)["finished"]


def test_a_forced_rerun_of_a_finished_joint_job_starts_over_and_resumes_after_a_kill(tiny_views, tmp_path,
                                                                                     monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="cocon")
    for view in ("rgb", "flow"):
        run_pretraining(job(tiny_views, tmp_path, "cpc", [view], epochs=1))
    init = {view: str(tmp_path / f"cpc-{view}.pt") for view in ("rgb", "flow")}
    cocon = job(tiny_views, tmp_path, "cocon", ["rgb", "flow"], epochs=2, init=init)
    state_dir, last = Path(cocon.state_dir), Path(cocon.state_dir) / "last.pt"
    run_pretraining(cocon)
    first = checkpoints.load(cocon.output)
    # snakemake --forcerun pretrain_cocon, and the forced job is killed after its first epoch
    Path(cocon.output).unlink()
    caplog.clear()
    kill_after_epoch(monkeypatch, 0)
    with pytest.raises(Killed):
        run_pretraining(cocon)
    monkeypatch.undo()
    assert f"starting over: {last} belongs to a finished run" in caplog.text and "epochs 0..1" in caplog.text
    with open(state_dir / "metrics.csv") as handle:
        assert [row["epoch"] for row in csv.DictReader(handle)] == ["0"], "the new run's curves alone"
    assert not Path(cocon.output).exists() and "finished" not in checkpoints.load(last)
    # the killed forced run resumes: its own state, not the finished one
    caplog.clear()
    run_pretraining(cocon)
    assert f"resuming at epoch 1, step 0 of 2 from {last}" in caplog.text and "epochs 1..1" in caplog.text
    second = checkpoints.load(cocon.output)
    assert [row["epoch"] for row in second["history"]] == [0, 1]
    for view in ("rgb", "flow"):
        assert_same_weights(first["models"][view], second["models"][view])
    assert [row["val_loss"] for row in second["history"]] == [row["val_loss"] for row in first["history"]]
    assert checkpoints.load(last)["finished"]


@pytest.mark.parametrize("checkpoint_minutes", [0, 1e-6], ids=["epoch-states", "a-step-checkpoint-every-step"])
def test_non_finite_loss_stops_with_the_step_and_terms_and_saves_no_state_after_it(tiny_views, tmp_path,
                                                                                   checkpoint_minutes):
    good = job(tiny_views, tmp_path, "cpc", ["rgb"], epochs=1)
    run_pretraining(good)
    before = Path(good.output).read_bytes()
    last = Path(good.state_dir) / "last.pt"
    good_state = last.read_bytes()
    # lr 1e30: step 0's loss is finite, its update makes step 1's NaN; the check reads the
    # device after the step (at the epoch's end, or before the step checkpoint) and names step 1
    exploding = job(tiny_views, tmp_path, "cpc", ["rgb"], epochs=2, lr=1e30, checkpoint_minutes=checkpoint_minutes)
    with pytest.raises(NonFiniteLossError, match=r"^epoch 0 step 1: loss nan is not finite \(cpc/rgb nan\); "
                                                 rf"the last good state is {last}$"):
        run_pretraining(exploding)
    assert Path(good.output).read_bytes() == before
    if checkpoint_minutes:  # the step checkpoint after step 0 is the last state: finite weights
        state = checkpoints.load(last)
        assert (state["epoch"], state["step"]) == (-1, 1)
        assert all(torch.isfinite(tensor).all() for tensor in state["model"].values())
    else:
        assert last.read_bytes() == good_state


def test_metrics_are_the_means_of_every_step_s_values_summed_on_the_host(tiny_views, tmp_path, monkeypatch):
    """The sums kept on the device give the numbers the loop summed on the host before."""
    losses, steps = pretrain._losses, []

    def recording_losses(*args, **kwargs):
        total, terms, accuracy = losses(*args, **kwargs)
        if torch.is_grad_enabled():   # a training step, not validation
            steps.append({name: float(value.detach()) for name, value in {"loss": total, **terms, **accuracy}.items()})
        return total, terms, accuracy

    monkeypatch.setattr(pretrain, "_losses", recording_losses)
    for view in ("rgb", "flow"):
        run_pretraining(job(tiny_views, tmp_path, "cpc", [view], epochs=1))
    steps.clear()
    init = {view: str(tmp_path / f"cpc-{view}.pt") for view in ("rgb", "flow")}
    cocon = job(tiny_views, tmp_path, "cocon", ["rgb", "flow"], epochs=2, init=init)
    run_pretraining(cocon)
    with open(Path(cocon.state_dir) / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(steps) == 4 and len(rows) == 2  # 2 steps per epoch
    for epoch, row in enumerate(rows):
        epoch_steps = steps[epoch * 2:(epoch + 1) * 2]
        for name in epoch_steps[0]:
            sum_ = 0.0
            for values in epoch_steps:
                sum_ += values[name]
            assert float(row[name]) == sum_ / 2, (epoch, name)


def _free_port() -> int:
    with socket.socket() as handle:
        handle.bind(("127.0.0.1", 0))
        return handle.getsockname()[1]


def _clips(root: Path, train: bool) -> ClipDataset:
    """Clips of the 9 train videos of split 1, random windows or (train False) all 18 dense windows."""
    settings = tiny_dataset(root)["pretrain"]
    train_videos, val_videos, _ = split_videos(root / "manifest.tsv", 1, settings["val_fraction"], settings["seed"])
    return ClipDataset(train_videos + val_videos, root / "views", ["rgb", "flow"], settings["input_size"],
                       ClipSpec(settings["num_blocks"], settings["block_length"], settings["frame_stride"]),
                       train=train)


def _batch(root: Path) -> dict:
    clips = _clips(root, train=True)
    return torch.utils.data.default_collate([clips[(0, item)] for item in range(4)])


def _validation(model, root: Path, runtime: Runtime, settings: dict) -> dict[str, float]:
    """``validation_metrics`` on this process's share of 18 windows in batches of 4, 4, 4, 4 and 2."""
    batches = validation_batches(18, 4, seed=0)
    loader = torch.utils.data.DataLoader(_clips(root, train=False),
                                         batch_sampler=batches[runtime.rank::runtime.world_size])
    return validation_metrics(model, loader, runtime, settings, METHODS["cocon"])


def _loss_and_grads(model, batch, runtime, settings):
    outputs = model({view: batch[view] for view in ("rgb", "flow")})
    total, terms, _ = _losses(outputs, runtime, settings, METHODS["cocon"])
    total.backward()
    return total.detach(), {name: param.grad.clone() for name, param in model.named_parameters()}


def distributed_results(root: Path, runtime: Runtime) -> tuple:
    """This process's loss, gradients (DDP) and validation metrics on its half of ``_batch``."""
    torch.manual_seed(0)
    settings = tiny_dataset(root)["pretrain"]
    model = MultiViewDPC({view: build_model(settings, view) for view in ("rgb", "flow")}).eval()
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    batch = _batch(root)
    half = {view: batch[view][runtime.rank * 2:(runtime.rank + 1) * 2] for view in ("rgb", "flow")}
    loss, grads = _loss_and_grads(ddp, half, runtime, settings)
    # rank 0 scores 3 batches, rank 1 2: each alone, the mean over all 5
    validation = _validation(model, root, runtime, settings)
    return loss, {name.removeprefix("module."): grad for name, grad in grads.items()}, validation


def _distributed_worker(rank: int, root: str, port: int, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
    runtime = setup(0)
    results[rank] = distributed_results(Path(root), runtime)
    shutdown(runtime)


def _single_process(root: Path) -> tuple:
    settings = tiny_dataset(root)["pretrain"]
    torch.manual_seed(0)
    model = MultiViewDPC({view: build_model(settings, view) for view in ("rgb", "flow")}).eval()
    alone = Runtime(0, 1, torch.device("cpu"))
    loss, grads = _loss_and_grads(model, _batch(root), alone, settings)
    return loss, grads, _validation(model, root, alone, settings)


def assert_equal_to_one_process(results: dict, single: tuple) -> None:
    single_loss, single_grads, single_validation = single
    for rank in range(2):
        loss, grads, validation = results[rank]
        assert validation.keys() == single_validation.keys()
        for name, value in single_validation.items():
            assert validation[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
        assert torch.allclose(loss, single_loss, rtol=1e-5, atol=1e-5)
        for name, grad in single_grads.items():
            # the same sums in another order: equal up to float32 rounding
            error = (grads[name] - grad).norm() / grad.norm().clamp_min(1e-12)
            assert error < 1e-4, f"{name}: relative error {error:.2e}"


def test_distributed_loss_gradients_and_validation_equal_one_process(tiny_views):
    single = _single_process(tiny_views)
    assert {"val_loss", "val_cpc/rgb", "val_sync/flow-rgb", "val_top1/flow"} <= set(single[2])
    results = mp.Manager().dict()
    mp.spawn(_distributed_worker, args=(str(tiny_views), _free_port(), results), nprocs=2, join=True)
    assert_equal_to_one_process(results, single)


def test_two_torchrun_agents_meet_in_a_c10d_rendezvous_and_equal_one_process(tiny_views, tmp_path):
    """Two "nodes" on this machine: two torchrun agents (the command each SLURM task runs,
    --nnodes=2, one process each), a c10d rendezvous at the first's address, gloo on CPU."""
    endpoint = f"127.0.0.1:{_free_port()}"
    command = [sys.executable, "-m", "cocon.train.launch", *launching.torchrun_arguments(2, 1, endpoint, "two-nodes"),
               "-m", "tests.distributed_worker", str(tiny_views), str(tmp_path)]
    # LOGLEVEL: torch's elastic agents log the rendezvous at INFO only
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "LOGLEVEL": "INFO"}
    agents = [subprocess.Popen(command, cwd=REPO, env=environment, stderr=subprocess.PIPE, text=True)
              for _ in range(2)]
    errors = [agent.communicate(timeout=300)[1] for agent in agents]
    assert [agent.returncode for agent in agents] == [0, 0], errors
    # one group of two agents, one process each, met in the c10d rendezvous
    assert all(re.search(r"rdzv_backend\s+: c10d", error) and "group_world_size=2" in error for error in errors)
    assert sorted(re.search(r"group_rank=(\d+)", error).group(1) for error in errors) == ["0", "1"]
    results = {rank: torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in range(2)}
    assert_equal_to_one_process(results, _single_process(tiny_views))


def _training_process(job_file: Path, rank: int) -> int | None:
    """The pid of the training process of ``rank`` that runs ``job_file``, or None yet."""
    for proc in Path("/proc").iterdir():
        try:
            command = (proc / "cmdline").read_bytes().split(b"\0")
            environment = (proc / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if b"cocon.train.worker" in command and str(job_file).encode() in command \
                and f"RANK={rank}".encode() in environment:
            return int(proc.name)
    return None


@pytest.fixture(scope="module")
def wider_views(tmp_path_factory):
    """rgb shards of a 24-video demo set: with val_fraction 0.2, 15 training videos (3 steps
    of 2 clips for each of 2 processes) and 3 validation videos (3 batches to share)."""
    root = tmp_path_factory.mktemp("wider")
    dataset = tiny_dataset(root)
    dataset["demo"] = {**dataset["demo"], "videos_per_class": 8}
    return build_demo_views(root, dataset)


def test_a_dead_rank_ends_the_job_within_a_minute_naming_it_and_keeps_the_last_good_state(wider_views, tmp_path):
    """Two training processes under torchrun (the command of a SLURM task, gloo on CPU); rank
    1 is killed (SIGKILL: no handler runs) inside an epoch, after a step checkpoint."""
    # 3 steps an epoch, a step checkpoint after each
    cpc = job(wider_views, tmp_path, "cpc", ["rgb"], epochs=20, batch_size=2, val_fraction=0.2,
              checkpoint_minutes=1e-6, collective_timeout=30)
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps(dataclasses.asdict(cpc)))
    last = Path(cpc.state_dir) / "last.pt"
    command = launching.training_command("pretrain", job_file, nodes=1, processes=2)
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    job_log = tmp_path / "job.log"
    with open(job_log, "w") as errors:
        agent = subprocess.Popen(command, cwd=REPO, env=environment, stderr=errors, start_new_session=True)
    try:
        victim, position, deadline = None, None, time.monotonic() + 300
        # rank 1 stopped (SIGSTOP) right after a step checkpoint inside an epoch: rank 0 then
        # waits in its next collective, and the saved state stays where it is while the test
        # reads it; a stop that missed the inside of the epoch is let go and tried again
        while position is None and agent.poll() is None and time.monotonic() < deadline:
            if not re.search(r"step checkpoint: epoch [1-9]\d*, step 1 of 3", job_log.read_text()):
                time.sleep(0.01)
                continue
            victim = victim or _training_process(job_file, rank=1)
            os.kill(victim, signal.SIGSTOP)
            time.sleep(0.5)
            saved = _saved_position(last)
            if saved and 1 <= saved[1] <= 2:
                position = saved
            else:
                os.kill(victim, signal.SIGCONT)
                time.sleep(0.3)
        assert position and agent.poll() is None, job_log.read_text()[-3000:]
        os.kill(victim, signal.SIGKILL)
        # the job ends within a minute: rank 0's collective fails on the closed connection
        # (collective_timeout bounds it if it did not), and torchrun stops the rest
        status = agent.wait(timeout=60)
    finally:
        if agent.poll() is None:
            os.killpg(agent.pid, signal.SIGKILL)
    errors = job_log.read_text()
    assert status == 1, errors[-3000:]
    assert re.search(rf"rank 1 \(local rank 1, pid {victim} on \S+\) failed first: killed by SIGKILL", errors), \
        errors[-3000:]
    # the last good state, whole, and no half-written one beside it
    assert _saved_position(last) == position and not last.with_name("last.pt.tmp").exists()
    assert not Path(cpc.output).exists()
    # the same command resumes from it and finishes
    resumed = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming at epoch {position[0] + 1}, step {position[1]} of 3 from {last}" in resumed.stderr
    assert Path(cpc.output).exists()


def _saved_position(state_path: Path) -> tuple[int, int] | None:
    """(last finished epoch, steps of the next) of the state at ``state_path``, or None."""
    try:
        state = checkpoints.load(state_path)
    except (FileNotFoundError, ValueError):   # none yet, or being renamed into place
        return None
    return state["epoch"], state["step"]


def signal_at_training_step(monkeypatch, signum: int, at: int) -> None:
    """A real ``signum`` to this process during training step ``at`` (counted over epochs from 0)."""
    losses, steps = pretrain._losses, []

    def losses_then_signal(*args, **kwargs):
        result = losses(*args, **kwargs)
        if torch.is_grad_enabled():   # a training step, not validation
            if len(steps) == at:
                os.kill(os.getpid(), signum)
            steps.append(at)
        return result

    monkeypatch.setattr(pretrain, "_losses", losses_then_signal)


@pytest.fixture(scope="module")
def uninterrupted(tiny_views, tmp_path_factory):
    """``uninterrupted(loader)``: 2 epochs of 4 steps with a loader worker, never stopped (run once per loader)."""
    runs = {}

    def run(loader: str = "cpu") -> dict:
        if loader not in runs:
            out = tmp_path_factory.mktemp(f"uninterrupted-{loader}")
            cpc = job(tiny_views, out, "cpc", ["rgb"], epochs=2, batch_size=2, workers=1, loader=loader)
            run_pretraining(cpc)
            runs[loader] = checkpoints.load(cpc.output)
        return runs[loader]

    return run


@pytest.mark.parametrize("signum, at, loader", [(signal.SIGUSR1, 0, "cpu"), (signal.SIGTERM, 3, "cpu"),
                                                (signal.SIGUSR1, 4, "cpu"), (signal.SIGUSR1, 5, "device")],
                         ids=["first-step", "last-step-of-an-epoch", "first-step-of-the-next",
                              "inside-an-epoch-with-the-device-loader"])
def test_a_signal_at_any_step_saves_a_state_that_resumes_to_the_same_weights(tiny_views, uninterrupted, tmp_path,
                                                                             monkeypatch, caplog, signum, at, loader):
    caplog.set_level(logging.INFO, logger="cocon")
    uninterrupted = uninterrupted(loader)
    cpc = job(tiny_views, tmp_path, "cpc", ["rgb"], epochs=2, batch_size=2, workers=1, loader=loader)
    last = Path(cpc.state_dir) / "last.pt"
    signal_at_training_step(monkeypatch, signum, at)
    with pytest.raises(TrainingStopped) as stopped:
        run_pretraining(cpc)
    monkeypatch.undo()
    epoch, step = divmod(at + 1, 4)
    if step == 0:   # the epoch's last step: its validation is still to run
        epoch, step = epoch - 1, 4
    name = signal.Signals(signum).name
    assert stopped.value.exit_status == {"SIGUSR1": 75, "SIGTERM": 143}[name]
    assert f"{name} received: saved the state at epoch {epoch}, step {step} of 4 to {last}" in caplog.text
    state = checkpoints.load(last)
    assert (state["epoch"], state["step"]) == (epoch - 1, step) and not Path(cpc.output).exists()
    assert not last.with_name("last.pt.tmp").exists()
    caplog.clear()
    run_pretraining(cpc)
    assert f"resuming at epoch {epoch}, step {step} of 4 from {last}" in caplog.text
    resumed = checkpoints.load(cpc.output)
    assert_same_weights(uninterrupted["model"], resumed["model"])
    # the epochs' mean losses too: the sums of the steps before the stop were kept
    assert [row["loss"] for row in resumed["history"]] == [row["loss"] for row in uninterrupted["history"]]
    assert [row["val_loss"] for row in resumed["history"]] == [row["val_loss"] for row in uninterrupted["history"]]


def test_step_checkpoints_cover_a_kill_without_a_signal(tiny_views, uninterrupted, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="cocon")
    # a step checkpoint after every step; the job dies (no signal) right after the one of epoch 1, step 2
    cpc = job(tiny_views, tmp_path, "cpc", ["rgb"], epochs=2, batch_size=2, workers=1, checkpoint_minutes=1e-6)
    save = checkpoints.save_training_state

    def save_then_die(path, fingerprint, epoch, step, *args, **kwargs):
        save(path, fingerprint, epoch, step, *args, **kwargs)
        if (epoch, step) == (0, 2):
            raise Killed("killed after a step checkpoint")

    monkeypatch.setattr(checkpoints, "save_training_state", save_then_die)
    with pytest.raises(Killed):
        run_pretraining(cpc)
    monkeypatch.undo()
    assert "step checkpoint: epoch 1, step 1 of 4" in caplog.text
    # a half-written checkpoint of a kill during the next save is never read
    last = Path(cpc.state_dir) / "last.pt"
    last.with_name("last.pt.tmp").write_bytes(last.read_bytes()[:1000])
    caplog.clear()
    run_pretraining(job(tiny_views, tmp_path, "cpc", ["rgb"], epochs=2, batch_size=2, workers=1))
    assert f"resuming at epoch 1, step 2 of 4 from {last}" in caplog.text
    assert_same_weights(uninterrupted()["model"], checkpoints.load(cpc.output)["model"])


def test_normalisations_scores_and_losses_are_float32_under_bf16_autocast():
    settings = tiny_dataset(Path("unused"))["pretrain"]
    torch.manual_seed(0)
    models = {view: build_model(settings, view).eval() for view in ("rgb", "flow")}
    clips = {"rgb": torch.randn(4, 4, 3, 2, 32, 32), "flow": torch.randn(4, 4, 2, 2, 32, 32)}
    cpu = torch.device("cpu")
    with pretrain.autocast(cpu, "bf16"):
        outputs = {view: model(clips[view]) for view, model in models.items()}
        context = models["rgb"].context(clips["rgb"])
    assert outputs["rgb"][0].dtype == torch.float32
    # z, the targets, the predictions and the context L2-normalised in float32: unit norms to
    # float32's rounding (bfloat16's would be off by up to about 4e-3)
    for name, features, dim in (("pred", outputs["rgb"][0], 2), ("gt", outputs["rgb"][1], 2),
                                ("z", outputs["rgb"][2], 2), ("context", context, 1)):
        assert features.dtype == torch.float32, name
        assert (features.norm(dim=dim) - 1).abs().max() < 1e-5, name
    # the encoder did run in bfloat16
    assert not torch.allclose(models["rgb"](clips["rgb"])[2], outputs["rgb"][2], atol=1e-4)
    # the score matrices and losses: the same under autocast as without (autocast would run
    # their matrix products in bfloat16)
    # the score matrices and losses in float32 under autocast too: what the losses give on
    # their own, outside autocast (under it, their matrix products would run in bfloat16)
    with torch.no_grad():
        preds, gts = ({view: output[index] for view, output in outputs.items()} for index in (0, 1))
        blocks = {view: pool_blocks(output[2]) for view, output in outputs.items()}
        expected_total, expected_terms = cocon_loss(preds, gts, blocks, lambda_=settings["lambda"],
                                                    alpha=settings["alpha"], temperature=settings["temperature"])
        with pretrain.autocast(cpu, "bf16"):
            total, terms, accuracy = _losses(outputs, Runtime(0, 1, cpu), settings, METHODS["cocon"])
    assert total.dtype == torch.float32 and torch.equal(total, expected_total)
    assert terms.keys() == expected_terms.keys()
    for name in terms:
        assert torch.equal(terms[name], expected_terms[name]), name
    for view in preds:
        assert torch.equal(accuracy[f"top1/{view}"], dense_nce_accuracy(preds[view], gts[view])), view


def _conv3d_step(precision: str) -> list[torch.Tensor]:
    """The output and the weight and input gradients of ResNet18's 32-channel 3x3x3 convolution
    at width 0.125 on 2x2x2 feature maps, a batch of 48 (as bench.precision meets it), in
    ``precision`` on the CPU, through pretrain.step_kernels and autocast."""
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(32, 32, 3, padding=1, bias=False)
    features = (torch.randn(48, 32, 2, 2, 2).relu() * 3).requires_grad_()
    upstream = torch.randn(48, 32, 2, 2, 2)
    with pretrain.step_kernels(cpu, precision):
        with pretrain.autocast(cpu, precision):
            output = conv(features)
        output.float().backward(upstream)
    return [output.float(), conv.weight.grad, features.grad]


def test_cpu_bf16_convolution_gradients_match_fp32():
    """A bf16 step on the CPU is fp32's to bfloat16's rounding (measured: 0.2-0.8%), the
    weight gradient included. oneDNN's bf16 weight-gradient kernel for this convolution
    (jit_bf16:avx512_core_bf16, on CPUs with AVX512-BF16) returned values off by up to 1e32,
    different on every call, and bf16 training went NaN; step_kernels runs PyTorch's own
    kernels for CPU bf16, and leaves oneDNN on for everything else."""
    reference = _conv3d_step("fp32")
    for name, bf16, fp32 in zip(("output", "weight gradient", "input gradient"), _conv3d_step("bf16"), reference):
        assert bf16.dtype == torch.float32, name
        assert ((bf16 - fp32).norm() / fp32.norm()) < 0.05, name
    assert torch.backends.mkldnn.enabled
    with pretrain.step_kernels(torch.device("cpu"), "fp32"), pretrain.step_kernels(torch.device("cpu"), "auto"):
        assert torch.backends.mkldnn.enabled


def test_bf16_training_follows_fp32_over_50_steps(tiny_views):
    """50 CoCon steps (rgb + flow) of the demo config at a tiny width, from the same seed,
    weights and batches, in fp32 and with CPU bf16 autocast (bench.precision). The bounds:
    - the first step (the same weights and clips) differs by bfloat16's rounding alone: 8
      significant bits (relative rounding 2^-9) leave the cosines off by a few 1e-3, which
      the temperature (1/0.0049) turns into logit errors of about 1 on logits of tens, so
      about 1% of the loss: 5% is the bound (measured here: 0.04-2% over seeds and batches);
    - after 50 steps, training is chaotic (the first step's gradients have a cosine of
      about 0.95 between precisions, and the curves part within a few steps), so the steps
      cannot be compared one by one; what must agree is the progress. The mean loss of the
      last 10 steps of bf16 is within 5% of fp32's progress (its first loss less that mean)
      of fp32's: measured 0.9%, while fp32 runs that differ only in their seed end up to 1.6%
      apart (bench.precision --seeds 5), so bf16 trains as fp32 does, within seed noise."""
    from bench.precision import compare

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the training jobs of these tests: two threads contend on a small machine
    try:
        result = compare(tiny_views / "views", tiny_views / "manifest.tsv", torch.device("cpu"), steps=50)
    finally:
        torch.set_num_threads(threads)
    assert len(result["fp32"]) == len(result["bf16"]) == 50
    assert result["fp32"] != result["bf16"]  # bf16 really ran
    assert result["first_step_relative_difference"] < 0.05
    for precision in ("fp32", "bf16"):
        first, last = result[f"{precision}_first_last10"]
        assert last < 0.2 * first, precision  # both trained
    assert result["last10_difference_share_of_progress"] < 0.05
