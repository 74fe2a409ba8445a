"""Pretraining: one loop for CPC (one view, lambda 0) and CoCon (several views).

Methods (the paper's Table 1): ``cpc`` trains one view alone with the dense NCE loss;
``cocon``, ``cpc+sim`` and ``cpc+sync`` train several views jointly, each starting from
its ``cpc`` checkpoint, adding lambda * (sync + alpha * sim) over every pair of views, or
one of the two terms.

Training sees the train part of the job's official split, less a validation part carved
from it per class (``pretrain.val_fraction``; the test split is never seen). After each
epoch the same loss is computed on the validation videos, on every dense window,
centrally cropped, in fixed batches, and the learning rate drops tenfold when that
validation loss plateaus (DESIGN.md section 6).

The output is one checkpoint per view (``{view}.pt``), or one of every view for a joint
method (``joint.pt``); a state folder beside it holds the state of the last finished epoch
or step checkpoint (``last.pt``: models, optimizer, scheduler, every process's RNG, the
position in the epoch, history), ``metrics.csv`` and TensorBoard curves. A stopped run
resumes from ``last.pt``, inside the epoch when the state is a step checkpoint (written on
SIGUSR1 or SIGTERM, and every ``pretrain.checkpoint_minutes``; ``cocon.train.preemption``). Once the output is written,
``last.pt`` is marked finished (``checkpoints.mark_finished``), so any later run of the
job (``snakemake --forcerun pretrain_cpc``, or one re-planned because its inputs changed)
trains every epoch again from scratch, with the curves started over too.
"""
from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from cocon.config import config_hash
from cocon.data.clips import (
    VIEW_CHANNELS, ClipDataset, ClipSpec, EpochSampler, VideoRef, dense_starts, split_videos,
)
from cocon.data.loader import ClipBatches
from cocon.losses import cocon_loss, dense_nce_accuracy, pool_blocks
from cocon.models import DPC
from cocon.train import checkpoints, launch as launching
from cocon.train.distributed import Runtime, average, gather, setup, shutdown
from cocon.train.history import tensorboard, write_metrics
from cocon.train.preemption import StepCheckpoints, StopSignals, ignore_stop_signals
from cocon.train.step_metrics import StepMetrics

log = logging.getLogger(__name__)

METHODS = {
    "cpc": dict(joint=False, use_sync=False, use_sim=False),
    "cpc+sim": dict(joint=True, use_sync=False, use_sim=True),
    "cpc+sync": dict(joint=True, use_sync=True, use_sim=False),
    "cocon": dict(joint=True, use_sync=True, use_sim=True),
}


# steps between two reads of the epoch's sums from the device (StepMetrics): the tqdm line
# shows the mean loss so far, and a non-finite loss is found at most this many steps late
LOG_EVERY_STEPS = 50
PRECISIONS = ("auto", "fp32", "bf16")


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the message names the step and every loss term."""


def autocast(device: torch.device, precision: str):
    """The forward pass's autocast for ``pretrain.precision``: ``bf16`` (``auto`` on CUDA) runs
    the convolutions and matrix products of the model in bfloat16; ``fp32`` (``auto`` on the
    CPU) runs everything in float32. The normalisations, score matrices and losses are float32
    either way (DPC._l2_normalized, _losses)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=uses_bf16(device, precision))


def uses_bf16(device: torch.device, precision: str) -> bool:
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {PRECISIONS}")
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


@contextmanager
def step_kernels(device: torch.device, precision: str):
    """Around a whole training step (forward, backward, update): bf16 on the CPU runs
    PyTorch's own convolution kernels instead of oneDNN's. oneDNN's bf16 weight gradient of a
    3-D convolution (``jit_bf16:avx512_core_bf16``, chosen on CPUs with AVX512-BF16, torch
    2.14.1) came out 87% off fp32's, and different on every call, for ResNet18's 32-channel
    2x2x2 stage at width 0.125, which made bf16 training NaN within 8 steps
    (tests/test_pretrain.py::test_cpu_bf16_convolution_gradients_match_fp32). fp32, and bf16
    on a GPU, are left as they are."""
    if device.type != "cpu" or not uses_bf16(device, precision):
        yield
        return
    onednn = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = onednn


def training_step(model: nn.Module, clips: dict[str, torch.Tensor], optimizer, runtime: Runtime, settings: dict,
                  method: dict):
    """One optimizer step on ``clips`` (view -> batch) in ``pretrain.precision``: the loss, its
    terms and the accuracies, still on the device; the step's gradients stay in ``.grad``."""
    with step_kernels(runtime.device, settings["precision"]):
        with autocast(runtime.device, settings["precision"]):
            outputs = model(clips)
        total, terms, accuracy = _losses(outputs, runtime, settings, method)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
    return total, terms, accuracy


def build_model(settings: dict, view: str) -> DPC:
    return DPC(backbone=settings["backbone"], in_channels=VIEW_CHANNELS[view], num_blocks=settings["num_blocks"],
               pred_steps=settings["pred_steps"], normalize=settings["normalize"], width=settings["width"])


def model_config(settings: dict, view: str) -> dict:
    """What ``build_model`` needs, stored in every checkpoint so it rebuilds the model alone."""
    keys = ("backbone", "width", "num_blocks", "pred_steps", "block_length", "frame_stride", "normalize")
    return {"view": view, "input_size": settings["input_size"][view], **{key: settings[key] for key in keys}}


class MultiViewDPC(nn.Module):
    """One DPC per view, run on the same clips; returns {view: (pred, gt, z)}."""

    def __init__(self, models: dict[str, DPC]):
        super().__init__()
        self.models = nn.ModuleDict(models)

    def forward(self, clips: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, ...]]:
        return {view: model(clips[view]) for view, model in self.models.items()}


@dataclass
class PretrainJob:
    dataset: dict
    method: str
    views: list[str]
    views_dir: str
    manifest: str
    output: str                        # the final checkpoint: one view's (cpc), or every view's (joint.pt)
    state_dir: str
    split: int = 1                      # the official split whose train part it sees (less validation)
    init: dict[str, str] | None = None  # view -> cpc checkpoint (joint methods)
    epochs: int | None = None           # default: cpc_epochs or cocon_epochs
    threads: int | None = None          # torch CPU threads (default: torch's choice)


def _losses(outputs, runtime: Runtime, settings: dict, method: dict):
    """The loss, its terms and the accuracies of the model's ``outputs``, in float32 even when
    called under bf16 autocast: the dense NCE logits are cosines divided by the temperature
    (up to about 200 at 0.0049), beyond bfloat16's 8 bits of mantissa."""
    with torch.autocast(runtime.device.type, enabled=False):
        preds, gts, blocks = {}, {}, {}
        for view, (pred, gt, z) in outputs.items():
            preds[view] = gather(pred.float(), runtime)
            gts[view] = gather(gt.float(), runtime)
            blocks[view] = gather(pool_blocks(z.float()), runtime)
        total, terms = cocon_loss(preds, gts, blocks, lambda_=settings["lambda"] if method["joint"] else 0.0,
                                  alpha=settings["alpha"], temperature=settings["temperature"],
                                  sync_p=settings["sync_p"], use_sync=method["use_sync"], use_sim=method["use_sim"])
        accuracy = {f"top1/{view}": dense_nce_accuracy(preds[view], gts[view]) for view in preds}
    return total, terms, accuracy


def _non_finite(epoch: int, state_path: Path):
    """The error StepMetrics raises for a step whose loss was not finite, naming every term."""
    def error(step: int, values: dict[str, float]) -> NonFiniteLossError:
        terms = ", ".join(f"{name} {value:.4g}" for name, value in values.items() if name != "loss")
        return NonFiniteLossError(f"epoch {epoch} step {step}: loss {values['loss']} is not finite ({terms}); "
                                  f"the last good state is {state_path}")
    return error


def validation_batches(num_clips: int, batch_size: int, seed: int) -> list[list[int]]:
    """The validation clips in batches of up to ``batch_size``, the same every epoch.

    The order is shuffled once (by ``seed``) so that a batch mixes videos: the other clips
    of a batch are the negatives of the dense NCE loss, and the half-overlapping windows of
    one video would share blocks with the positives. A final batch of a single clip, with
    no other clip to contrast with, is dropped."""
    order = torch.randperm(num_clips, generator=torch.Generator().manual_seed(seed)).tolist()
    batches = [order[start:start + batch_size] for start in range(0, num_clips, batch_size)]
    return batches if len(batches[-1]) > 1 else batches[:-1]


@torch.no_grad()
def validation_metrics(model: MultiViewDPC, loader, runtime: Runtime, settings: dict, method: dict) -> dict[str, float]:
    """The loss, its terms and the accuracies on the validation batches of ``loader`` (this
    process's share), in eval mode, averaged over batches and processes, named ``val_loss``,
    ``val_cpc/rgb``, ... ``model`` is the bare model, not its DDP wrapper: a forward of the
    wrapper could start collectives, and processes may hold different numbers of batches."""
    model.eval()
    # each process scores its own batches alone: the negatives stay within a batch, as in
    # a single process, and no process waits on another's gather
    alone = Runtime(0, 1, runtime.device)
    names, sums = None, None  # summed on the device (float64, as Python floats would), read once
    batches = 0
    for batch in loader:
        clips = {view: batch[view].to(runtime.device, non_blocking=True) for view in model.models}
        with autocast(runtime.device, settings["precision"]):
            outputs = model(clips)
        total, terms, accuracy = _losses(outputs, alone, settings, method)
        values = {"loss": total, **terms, **accuracy}
        names = names or list(values)
        stacked = torch.stack([values[name].to(torch.float64) for name in names])
        sums = stacked if sums is None else sums + stacked
        batches += 1
    sums = dict(zip(names, sums.tolist())) if batches else {}
    # sums over all processes divided by all their batches: a mean over batches even when
    # some processes hold one batch more
    all_batches = average(batches, runtime)
    return {f"val_{name}": average(value, runtime) / all_batches for name, value in sums.items()}


def run_pretraining(job: PretrainJob) -> None:
    settings = job.dataset["pretrain"]
    method = METHODS[job.method]
    if method["joint"] != (len(job.views) > 1):
        raise ValueError(f"method {job.method!r} needs {'several views' if method['joint'] else 'one view'}, "
                         f"got {job.views}")
    runtime = setup(settings["gpus"], settings["collective_timeout"])
    try:
        with StopSignals(loader_workers=settings["workers"] > 0) as signals:
            _train(job, settings, method, runtime, signals)
    finally:
        shutdown(runtime)


def _checked_validation_batches(val_videos: list[VideoRef], num_training_videos: int, spec: ClipSpec, settings: dict,
                                runtime: Runtime) -> list[list[int]]:
    """The validation batches (``validation_batches``), or a clear error, before any training,
    when the carved validation part has too few clips for one batch of two, or, under DDP,
    too few batches to give every process one."""
    num_clips = sum(len(dense_starts(video.num_frames, spec)) for video in val_videos)
    carved = (f"pretrain.val_fraction {settings['val_fraction']} carves {len(val_videos)} validation video(s) "
              f"with {num_clips} window(s) from {len(val_videos) + num_training_videos} train videos")
    if num_clips < 2:
        raise ValueError(f"{carved}; the validation loss needs at least 2 windows (a batch of 2: the other clips "
                         f"of a batch are the negatives): raise pretrain.val_fraction")
    batches = validation_batches(num_clips, settings["batch_size"], settings["seed"])
    if len(batches) < runtime.world_size:
        raise ValueError(f"{carved}, {len(batches)} batch(es) of up to {settings['batch_size']}, fewer than the "
                         f"{runtime.world_size} processes: raise pretrain.val_fraction")
    return batches


def _train(job: PretrainJob, settings: dict, method: dict, runtime: Runtime, signals: StopSignals) -> None:
    torch.manual_seed(settings["seed"])
    if job.threads:
        torch.set_num_threads(job.threads)
    device = runtime.device
    cuda = device.type == "cuda"
    spec = ClipSpec(settings["num_blocks"], settings["block_length"], settings["frame_stride"])
    videos, val_videos, _ = split_videos(job.manifest, job.split, settings["val_fraction"], settings["seed"])
    val_batches = _checked_validation_batches(val_videos, len(videos), spec, settings, runtime)
    epochs = job.epochs or settings["cocon_epochs" if method["joint"] else "cpc_epochs"]
    fingerprint = config_hash({"pretrain": checkpoints.fingerprint_settings(settings), "method": job.method, "views": job.views, "epochs": epochs,
                               "init": job.init, "split": job.split})
    models = {view: build_model(settings, view) for view in job.views}
    if job.init:
        for view in job.views:
            state = checkpoints.load(job.init[view])
            models[view].load_state_dict(state["model"])
            log.info("%s: initialised from %s (epoch %s)", view, job.init[view], state["epoch"])
    model = MultiViewDPC(models).to(device)
    if cuda:
        for view_model in models.values():
            # only the encoder's 3D convolutions: cuDNN follows the weights' layout, and the
            # 2D convolutions of the ConvGRU and predictor have no channels_last_3d
            view_model.encoder.to(memory_format=torch.channels_last_3d)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings["lr"], weight_decay=settings["weight_decay"])
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.1,
                                                           patience=settings["plateau_patience"],
                                                           min_lr=settings["min_lr"])
    state_path = Path(job.state_dir) / "last.pt"
    state = checkpoints.resume_training(state_path, fingerprint, model, optimizer, scheduler, runtime.rank)
    start_epoch, start_step, history = (state["epoch"] + 1, state["step"], state["history"]) if state else (0, 0, [])
    if state is None and runtime.is_main:
        # a run from scratch: the curves of an earlier run of this job must not mix with its own
        checkpoints.clear_records(job.state_dir)
    trained = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if cuda else None) \
        if runtime.distributed else model

    dataset = ClipDataset(videos, job.views_dir, job.views, settings["input_size"], spec, train=True,
                          seed=settings["seed"])
    sampler = EpochSampler(len(dataset), settings["batch_size"], settings["seed"], runtime.rank, runtime.world_size)
    workers = settings["workers"]
    loader_options = dict(
        num_workers=workers, pin_memory=cuda, persistent_workers=workers > 0,
        # forkserver: forking a process whose libraries run threads can deadlock the child
        multiprocessing_context="forkserver" if workers > 0 else None,
        # the workers' seeds come from a generator of their own, not the global one that
        # dropout draws from: persistent workers start (and draw) once per process, so a
        # resumed run would otherwise drop out differently from an uninterrupted one
        generator=torch.Generator(),
        # SLURM signals every process of the job step: the training process alone answers
        worker_init_fn=ignore_stop_signals,
    )
    # pretrain.loader: clips made in the loader workers (cpu), or only read there and made on the device
    loader = ClipBatches(dataset, settings["loader"], device, batch_size=settings["batch_size"], sampler=sampler,
                         drop_last=True, **loader_options)
    val_clips = ClipDataset(val_videos, job.views_dir, job.views, settings["input_size"], spec, train=False)
    val_loader = ClipBatches(val_clips, settings["loader"], device,
                             batch_sampler=val_batches[runtime.rank::runtime.world_size], **loader_options)
    log.info("%s on %s: %d training videos, %d steps per epoch; %d validation videos, %d batches of their %d "
             "windows; epochs %d..%d, %d process(es) on %s", job.method, "+".join(job.views), len(videos),
             len(loader), len(val_videos), len(val_batches), len(val_clips), start_epoch, epochs - 1,
             runtime.world_size, device)
    steps_per_epoch = sampler.batches
    if state and runtime.is_main:
        log.info("resuming at epoch %d, step %d of %d from %s", start_epoch, start_step, steps_per_epoch, state_path)
    writer = tensorboard(job.state_dir) if runtime.is_main else None
    step_checkpoints = StepCheckpoints(signals, runtime, settings["checkpoint_minutes"], state_path)
    for epoch in range(start_epoch, epochs):
        first_step = start_step if epoch == start_epoch else 0
        sampler.set_epoch(epoch, first_step)
        trained.train()
        # a run resumed inside the epoch goes on with the sums of its steps so far
        resumed = state["local"] if state and epoch == start_epoch else {}
        steps, seconds_before = resumed.get("steps", 0), resumed.get("seconds", 0.0)
        # no host sync inside a step: its values stay on the device until read (StepMetrics)
        metrics = StepMetrics(device, LOG_EVERY_STEPS, _non_finite(epoch, state_path), resumed.get("sums"))
        started = time.perf_counter()
        progress = tqdm(loader, desc=f"{job.method} epoch {epoch}", disable=not runtime.is_main, mininterval=10,
                        initial=first_step, total=steps_per_epoch)
        for step, batch in enumerate(progress, start=first_step):
            total, terms, accuracy = training_step(trained, {view: batch[view] for view in job.views}, optimizer,
                                                   runtime, settings, method)
            steps += 1
            sums_so_far = metrics.add(step, {"loss": total, **terms, **accuracy}, {"loss": total, **terms})
            if sums_so_far:  # once every LOG_EVERY_STEPS steps
                progress.set_postfix(loss=f"{sums_so_far['loss'] / steps:.4g}", refresh=False)

            def save_state():
                # read (and checked) first: a state never holds weights a non-finite loss made
                local = {"sums": metrics.read(), "steps": steps,
                         "seconds": seconds_before + time.perf_counter() - started}
                checkpoints.save_training_state(state_path, fingerprint, epoch - 1, step + 1, model, optimizer,
                                                scheduler, history, runtime, local)

            step_checkpoints.after_step(save_state, epoch, step + 1, steps_per_epoch)
        sums = metrics.read()  # waits for the epoch's last step
        seconds = seconds_before + time.perf_counter() - started
        val_started = time.perf_counter()
        val_metrics = validation_metrics(model, val_loader, runtime, settings, method)
        row = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"],
               **{name: average(value / steps, runtime) for name, value in sums.items()}, **val_metrics,
               "seconds": round(seconds, 2),
               "clips_per_s": round(steps * settings["batch_size"] * runtime.world_size / seconds, 2),
               "val_seconds": round(time.perf_counter() - val_started, 2)}
        scheduler.step(row["val_loss"])
        history.append(row)
        if runtime.is_main:
            log.info("epoch %d: %s", epoch, ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "epoch"))
            write_metrics(Path(job.state_dir) / "metrics.csv", history)
            for name, value in row.items():
                if name != "epoch":
                    writer.add_scalar(name, value, epoch)
        checkpoints.save_training_state(state_path, fingerprint, epoch, 0, model, optimizer, scheduler, history,
                                        runtime)
        step_checkpoints.saved()
        step_checkpoints.after_epoch(epoch + 1, steps_per_epoch)
    if runtime.is_main:
        writer.close()
        common = {"method": job.method, "views": job.views, "dataset": job.dataset["name"], "split": job.split,
                  "epoch": epochs - 1, "fingerprint": fingerprint, "history": history}
        weights = {view: {key: value.cpu() for key, value in models[view].state_dict().items()}
                   for view in job.views}
        if method["joint"]:
            checkpoints.save({**common, "models": weights,
                              "model_configs": {view: model_config(settings, view) for view in job.views}}, job.output)
        else:
            view = job.views[0]
            checkpoints.save({**common, "view": view, "model": weights[view],
                              "model_config": model_config(settings, view)}, job.output)
        log.info("wrote %s", job.output)
        # after the output, never before: a kill in between leaves an unfinished state of the
        # last epoch, from which a rerun writes the same output without training
        checkpoints.mark_finished(state_path)


def load_pretrained(path: str | os.PathLike, view: str | None = None) -> tuple[DPC, dict]:
    """A pretrained view model and its checkpoint's metadata (read with weights_only=True);
    ``view`` picks one of a joint checkpoint's views (a CPC checkpoint has one). An imported
    checkpoint (``cocon import-checkpoint``) may lack BatchNorm running statistics or the
    predictor, as its ``bn_statistics`` and ``predictor`` say: those stay as built."""
    state = checkpoints.load(path)
    if view is None and "models" in state:
        raise ValueError(f"{path}: a joint checkpoint of {state['views']}: say which view to load")
    chosen = checkpoints.view_model(path, view or state["view"])
    config = chosen["model_config"]
    model = build_model(config, config["view"])
    checkpoints.load_weights(model, chosen, path)
    return model, {**state, "model_config": config}


def launch(job: PretrainJob) -> None:
    """Run ``job`` here, as one torchrun job with a process per GPU, or as a SLURM job step
    over ``pretrain.nodes`` nodes (``cocon.train.launch``)."""
    launching.launch(job, "pretrain", job.dataset["pretrain"], run_pretraining)

