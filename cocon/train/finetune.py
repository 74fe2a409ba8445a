"""Fine-tuning and dense testing of one view (DESIGN.md section 6).

The classifier F = g(f(.)) -> pool -> BatchNorm1d -> dropout -> linear (DPC's LC head)
starts from a pretrained view checkpoint (``cpc``, ``cocon``, ...) or from scratch
(``random``) and is trained end to end on the train split of the configured official
split, augmented as DPC's ``eval/test.py`` does: crop and flip per clip, colour jitter
drawn once per clip with probability ``finetune.color_jitter``, no greying. A validation
part is carved from the train split (stratified, seeded; never from the test split) and
the epoch with the best validation accuracy is kept. Nothing is frozen unless
``finetune.freeze`` lists modules, and what it lists is frozen for the whole run: no
gradient, BatchNorm statistics fixed. Validation and testing take the central square of
``finetune.center_crop`` times the short side (DPC: 224 of 240 px) and cut every video
into windows of N blocks overlapping by half, averaging the softmax over them.

The outputs are the best model and the test scores; a state folder beside them holds the
state of the last finished epoch or step checkpoint (``last.pt``, as pretraining's), the
best epoch's weights (``best.pt``), ``metrics.csv`` and TensorBoard curves. A stopped run
resumes from ``last.pt``, inside the epoch after a stop signal or a step checkpoint.
With ``finetune.gpus`` > 1 or ``finetune.nodes`` > 1 it runs as pretraining does
(``cocon.train.launch``): DDP with each process's share of the batches, BatchNorm
statistics averaged over the processes after precise BN, validation and test videos
scored in shares. Once both
outputs are written, ``last.pt`` is marked finished (``checkpoints.mark_finished``), so any
later run of the job (``snakemake --forcerun finetune``, or one re-planned because its
inputs changed) trains every epoch again from scratch, with ``best.pt`` and the curves
started over too.
"""
from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from cocon.config import config_hash
from cocon.data.clips import ClipDataset, ClipSpec, EpochSampler, split_videos
from cocon.data.loader import ClipBatches
from cocon.data.manifest import read_manifest
from cocon.models import Classifier
from cocon.train import checkpoints, launch as launching
from cocon.train.batchnorm import batchnorm_layers, recalibrate_statistics
from cocon.train.distributed import (
    Runtime, all_gather_objects, average, average_tensors, barrier, setup, shutdown,
)
from cocon.train.history import tensorboard, write_metrics
from cocon.train.preemption import StepCheckpoints, StopSignals, ignore_stop_signals
from cocon.train.pretrain import LOG_EVERY_STEPS, NonFiniteLossError, build_model, model_config
from cocon.train.step_metrics import StepMetrics

log = logging.getLogger(__name__)

FREEZABLE = ("encoder", "aggregator")


@dataclass
class FinetuneJob:
    dataset: dict
    init: str                     # random, or the pretraining method of `checkpoint`
    view: str
    views_dir: str
    manifest: str
    checkpoint: str | None        # pretrained view checkpoint; None for random
    output: str                   # the best model
    scores: str                   # test-set softmax per video (.npz)
    state_dir: str
    split: int = 1                # the official split trained and tested on
    epochs: int | None = None
    threads: int | None = None


@dataclass
class Start:
    """What fine-tuning starts from: the pretrained (or random) model, the config it was built
    from (backbone, width, normalize, input size, clip geometry), and whether its BatchNorm
    layers lack running statistics (an imported DPC pretraining file)."""

    backbone: nn.Module
    model_config: dict
    without_statistics: bool


def starting_point(dataset: dict, view: str, checkpoint: str | None) -> Start:
    """The model of ``checkpoint``, built from the checkpoint's own config, whatever the
    dataset's ``pretrain`` section says (that section configures this dataset's own pretraining
    and the random initialisation); without a checkpoint, a random model of that section."""
    if not checkpoint:
        return Start(build_model(dataset["pretrain"], view), model_config(dataset["pretrain"], view), False)
    chosen = checkpoints.view_model(checkpoint, view)
    backbone = build_model(chosen["model_config"], view)
    checkpoints.load_weights(backbone, chosen, checkpoint)
    return Start(backbone, dict(chosen["model_config"]), checkpoints.needs_recalibration(chosen))


def build_classifier(dataset: dict, view: str, num_classes: int, checkpoint: str | None) -> Classifier:
    return Classifier(starting_point(dataset, view, checkpoint).backbone, num_classes, dataset["finetune"]["dropout"])


def freeze(model: Classifier, modules: list[str]) -> list[nn.Module]:
    """Stop gradients into ``modules`` (names in FREEZABLE); returns them so that training
    can keep them in eval mode (their BatchNorm statistics stay as loaded)."""
    frozen = []
    for name in modules:
        if name not in FREEZABLE:
            raise ValueError(f"finetune.freeze: {name!r} is not one of {FREEZABLE}")
        module = getattr(model.backbone, name)
        module.requires_grad_(False)
        frozen.append(module)
    return frozen


def set_train_mode(model: Classifier, frozen: list[nn.Module]) -> None:
    model.train()
    for module in frozen:
        module.eval()


def recalibrate_batchnorm(model: Classifier, loader, view: str, device: torch.device, frozen: list[nn.Module],
                          max_batches: int, runtime: Runtime) -> None:
    """Recompute BatchNorm running statistics as plain averages over training batches with
    the current weights ("precise BN"). The running averages kept during training lag
    behind weights that move quickly, as they do in short fine-tuning runs: in eval mode
    the model then sees features it was not trained on (on the demo: validation accuracy
    at chance with these lagging statistics, 100% after recalibration). Under DDP each
    process reads its own share of the batches, and the statistics are averaged over all."""
    frozen_ids = {id(module) for frozen_module in frozen for module in frozen_module.modules()}
    layers = [layer for layer in batchnorm_layers(model) if id(layer) not in frozen_ids]
    set_train_mode(model, frozen)
    recalibrate_statistics(layers, loader, lambda batch: model(batch[view].to(device)), max_batches)
    # under DDP: the mean over every process's batches (each process read as many)
    average_tensors([tensor for layer in layers for tensor in (layer.running_mean, layer.running_var)], runtime)


@dataclass
class DenseScores:
    """Test softmax of a ClipDataset: per video, averaged over its dense windows and their
    crops (video-level), and per window, averaged over its crops (clip-level)."""

    videos: np.ndarray        # [videos, classes]
    clips: np.ndarray         # [windows, classes]
    clip_videos: np.ndarray   # [windows]: the video of each window (index into the dataset's videos)
    clip_starts: np.ndarray   # [windows]: its first frame


@torch.no_grad()
def dense_scores(model: Classifier, dataset: ClipDataset, num_videos: int, batch_size: int,
                 runtime: Runtime, loader: str = "cpu") -> DenseScores:
    """The softmax of every item of ``dataset`` (each crop of each dense window), averaged per
    window and per video (every crop of every window weighs the same), the clips made as
    ``loader`` (finetune.loader) says. Under DDP each process scores its share of the videos,
    every world_size-th (``dataset`` holds this process's share: ``shard(videos, runtime)``),
    and every process gets all the scores."""
    model.eval()
    # its own generator: a draw from the global one would shift dropout after a resume
    batches = ClipBatches(dataset, loader, runtime.device, batch_size=batch_size, shuffle=False,
                          generator=torch.Generator())
    sums: dict[tuple[int, int], torch.Tensor] = {}
    counts: dict[tuple[int, int], int] = {}
    view = dataset.views[0]
    for batch in batches:
        probabilities = torch.softmax(model(batch[view]).float(), dim=1).cpu()
        for video, start, row in zip(batch["video"].tolist(), batch["start"].tolist(), probabilities):
            sums[(video, start)] = sums.get((video, start), 0) + row
            counts[(video, start)] = counts.get((video, start), 0) + 1
    windows = sorted(sums)
    share = (torch.stack([sums[window] / counts[window] for window in windows]).numpy(),
             np.array([video for video, _ in windows]), np.array([start for _, start in windows]))
    shares = all_gather_objects(share, runtime)
    # the i-th video of rank r's share is video r + i * world_size of all
    clip_videos = np.concatenate([rank + videos * runtime.world_size for rank, (_, videos, _) in enumerate(shares)])
    clips = np.concatenate([scores for scores, _, _ in shares])
    clip_starts = np.concatenate([starts for _, _, starts in shares])
    order = np.lexsort((clip_starts, clip_videos))
    clips, clip_videos, clip_starts = clips[order], clip_videos[order], clip_starts[order]
    per_video = np.zeros((num_videos, clips.shape[1]), dtype=clips.dtype)
    np.add.at(per_video, clip_videos, clips)
    per_video /= np.maximum(np.bincount(clip_videos, minlength=num_videos), 1)[:, None]
    return DenseScores(per_video, clips, clip_videos, clip_starts)


def shard(videos: list, runtime: Runtime) -> list:
    """This process's share of ``videos`` for ``dense_scores``."""
    return videos[runtime.rank::runtime.world_size]


def accuracy(scores: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    top = np.argsort(-scores, axis=1)[:, :k]
    return float((top == labels[:, None]).any(axis=1).mean())


def save_scores(path, scores: DenseScores, labels: np.ndarray, video_ids: list[str], crops: int) -> None:
    """The test scores file: video-level ``scores`` ``[videos, classes]`` with their ``labels`` and
    ``video_ids``, the number of dense ``windows``, the ``crops`` per window, and clip-level
    ``clip_scores`` ``[windows, classes]`` with ``clip_videos`` (index into video_ids) and
    ``clip_starts``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        np.savez(handle, scores=scores.videos, labels=labels, video_ids=np.array(video_ids),
                 windows=len(scores.clips), crops=crops, clip_scores=scores.clips, clip_videos=scores.clip_videos,
                 clip_starts=scores.clip_starts)
    tmp.replace(path)


def _non_finite(epoch: int, state_path: Path):
    """The error StepMetrics raises for a step whose loss was not finite."""
    def error(step: int, values: dict[str, float]) -> NonFiniteLossError:
        return NonFiniteLossError(f"epoch {epoch} step {step}: cross-entropy {values['cross-entropy']} is not "
                                  f"finite; the last good state is {state_path}")
    return error


def run_finetuning(job: FinetuneJob) -> None:
    settings = job.dataset["finetune"]
    runtime = setup(settings["gpus"], settings["collective_timeout"], "finetune.gpus")
    try:
        with StopSignals(loader_workers=settings["workers"] > 0) as signals:
            _finetune(job, settings, runtime, signals)
    finally:
        shutdown(runtime)


def launch(job: FinetuneJob) -> None:
    """Run ``job`` here, as one torchrun job with a process per GPU, or as a SLURM job step
    over ``finetune.nodes`` nodes (``cocon.train.launch``)."""
    launching.launch(job, "finetune", job.dataset["finetune"], run_finetuning)


def _finetune(job: FinetuneJob, settings: dict, runtime: Runtime, signals: StopSignals) -> None:
    torch.manual_seed(settings["seed"])
    if job.threads:
        torch.set_num_threads(job.threads)
    device = runtime.device
    epochs = job.epochs or settings["epochs"]
    train, val, test = split_videos(job.manifest, job.split, settings["val_fraction"], settings["seed"])
    if not val:
        raise ValueError(f"{job.manifest}: too few training videos to carve a validation part "
                         f"(finetune.val_fraction {settings['val_fraction']})")
    num_classes = 1 + max(row.label_index for row in read_manifest(job.manifest))
    initial = starting_point(job.dataset, job.view, job.checkpoint)
    model_settings = initial.model_config
    model = Classifier(initial.backbone, num_classes, settings["dropout"]).to(device)
    frozen = freeze(model, settings["freeze"])
    trainable = [param for param in model.parameters() if param.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=settings["lr"], weight_decay=settings["weight_decay"])
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, settings["milestones"], settings["gamma"])
    fingerprint = config_hash({"finetune": checkpoints.fingerprint_settings(settings),
                               "model": checkpoints.fingerprint_settings(model_settings), "init": job.init,
                               "view": job.view, "checkpoint": job.checkpoint, "epochs": epochs, "split": job.split})
    state_path, best_path = Path(job.state_dir) / "last.pt", Path(job.state_dir) / "best.pt"
    state = checkpoints.resume_training(state_path, fingerprint, model, optimizer, scheduler, runtime.rank)
    start_epoch, start_step, history, best = (
        (state["epoch"] + 1, state["step"], state["history"], state["best"]) if state
        else (0, 0, [], {"accuracy": -1.0, "epoch": -1}))
    if state is None and runtime.is_main:
        # a run from scratch: an earlier run's best.pt and curves must not mix with its own
        checkpoints.clear_records(job.state_dir)
    trained = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if runtime.distributed else model
    spec = ClipSpec(model_settings["num_blocks"], model_settings["block_length"], model_settings["frame_stride"])
    sizes = {job.view: model_settings["input_size"]}
    clips = ClipDataset(train, job.views_dir, [job.view], sizes, spec, train=True, seed=settings["seed"],
                        augmentation="finetune", color_jitter=settings["color_jitter"])

    def dense_clips(videos, test_crops=1):
        return ClipDataset(shard(videos, runtime), job.views_dir, [job.view], sizes, spec, train=False,
                           center_crop=settings["center_crop"], test_crops=test_crops)

    val_clips = dense_clips(val)

    sampler = EpochSampler(len(clips), settings["batch_size"], settings["seed"], runtime.rank, runtime.world_size)
    workers = settings["workers"]
    # finetune.loader: clips made in the loader workers (cpu), or only read there and made on the device
    loader = ClipBatches(clips, settings["loader"], device, batch_size=settings["batch_size"], sampler=sampler,
                         num_workers=workers, persistent_workers=workers > 0, drop_last=True,
                         pin_memory=device.type == "cuda",
                         multiprocessing_context="forkserver" if workers > 0 else None,
                         # its own generator: iterating a loader draws from it, and a
                         # draw from the global one would shift dropout after a resume
                         generator=torch.Generator(), worker_init_fn=ignore_stop_signals)
    steps_per_epoch = sampler.batches
    log.info("%s %s: %d train, %d val, %d test videos, %d steps per epoch; frozen: %s; epochs %d..%d, %d process(es) "
             "on %s", job.init, job.view, len(train), len(val), len(test), steps_per_epoch,
             settings["freeze"] or "nothing", start_epoch, epochs - 1, runtime.world_size, device)
    if state and runtime.is_main:
        log.info("resuming at epoch %d, step %d of %d from %s", start_epoch, start_step, steps_per_epoch, state_path)
    val_labels = np.array([video.label_index for video in val])
    log.info("model (%s): %s", "the checkpoint's config" if job.checkpoint else "pretrain section",
             ", ".join(f"{key} {value}" for key, value in model_settings.items()))
    if initial.without_statistics and frozen and state is None:
        # a frozen encoder keeps its statistics for the whole run, and an imported DPC
        # pretraining file has none: compute them once, on training clips, before training
        log.info("%s has no BatchNorm running statistics: computing them for the frozen %s on %d training "
                 "batches", job.checkpoint, ", ".join(settings["freeze"]), settings["bn_batches"])
        recalibrate_batchnorm(model, loader, job.view, device, [], settings["bn_batches"], runtime)
    writer = tensorboard(job.state_dir) if runtime.is_main else None
    loss_function = nn.CrossEntropyLoss()
    step_checkpoints = StepCheckpoints(signals, runtime, settings["checkpoint_minutes"], state_path)
    for epoch in range(start_epoch, epochs):
        first_step = start_step if epoch == start_epoch else 0
        sampler.set_epoch(epoch, first_step)
        set_train_mode(model, frozen)
        # a run resumed inside the epoch goes on with the sums of its steps so far
        resumed = state["local"] if state and epoch == start_epoch else {}
        seen, seconds_before = resumed.get("seen", 0), resumed.get("seconds", 0.0)
        # no host sync inside a step: the loss and the correct count stay on the device until read
        metrics = StepMetrics(device, LOG_EVERY_STEPS, _non_finite(epoch, state_path),
                              {"loss": resumed["total"], "correct": resumed["correct"]} if resumed else None)
        started = time.perf_counter()
        progress = tqdm(loader, desc=f"finetune {job.init} {job.view} epoch {epoch}", mininterval=10,
                        disable=not runtime.is_main, initial=first_step, total=steps_per_epoch)
        for step, batch in enumerate(progress, start=first_step):
            labels = batch["label"]
            logits = trained(batch[job.view])
            loss = loss_function(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += len(labels)
            # the loss summed weighted by the batch's clips, in float64 as the host summed it before
            sums_so_far = metrics.add(step, {"loss": loss.detach().double() * len(labels),
                                             "correct": (logits.argmax(dim=1) == labels).sum()},
                                      {"cross-entropy": loss})
            if sums_so_far:  # once every LOG_EVERY_STEPS steps
                progress.set_postfix(loss=f"{sums_so_far['loss'] / seen:.4g}", refresh=False)

            def save_state():
                # read (and checked) first: a state never holds weights a non-finite loss made
                sums = metrics.read()
                local = {"total": sums["loss"], "correct": int(sums["correct"]), "seen": seen,
                         "seconds": seconds_before + time.perf_counter() - started}
                checkpoints.save_training_state(state_path, fingerprint, epoch - 1, step + 1, model, optimizer,
                                                scheduler, history, runtime, local, best=best)

            step_checkpoints.after_step(save_state, epoch, step + 1, steps_per_epoch)
        sums = metrics.read()  # waits for the epoch's last step
        total, correct = sums.get("loss", 0.0), int(sums.get("correct", 0))
        seconds = seconds_before + time.perf_counter() - started
        with warnings.catch_warnings():
            # resumed after the epoch's last step, this process ran no optimizer step before it
            warnings.filterwarnings("ignore", r"Detected call of `lr_scheduler.step\(\)` before")
            scheduler.step()
        sampler.set_epoch(epoch)  # precise BN reads the epoch's first batches, also after a resume
        recalibrate_batchnorm(model, loader, job.view, device, frozen, settings["bn_batches"], runtime)
        val_accuracy = accuracy(dense_scores(model, val_clips, len(val), settings["batch_size"], runtime,
                                             settings["loader"]).videos, val_labels)
        row = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"],
               "loss": average(total, runtime) / average(seen, runtime),
               "train_top1": average(correct, runtime) / average(seen, runtime), "val_top1": val_accuracy,
               "seconds": round(seconds, 2)}
        history.append(row)
        if val_accuracy > best["accuracy"]:
            best = {"accuracy": val_accuracy, "epoch": epoch}
            if runtime.is_main:
                checkpoints.save({"model": model.state_dict(), "epoch": epoch}, best_path)
        if runtime.is_main:
            log.info("epoch %d: %s", epoch, ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "epoch"))
            for name, value in row.items():
                if name != "epoch":
                    writer.add_scalar(name, value, epoch)
            write_metrics(Path(job.state_dir) / "metrics.csv", history)
        checkpoints.save_training_state(state_path, fingerprint, epoch, 0, model, optimizer, scheduler, history,
                                        runtime, best=best)
        step_checkpoints.saved()
        step_checkpoints.after_epoch(epoch + 1, steps_per_epoch)
    barrier(runtime)  # best.pt is written
    model.load_state_dict(checkpoints.load(best_path)["model"])
    scores = dense_scores(model, dense_clips(test, settings["test_crops"]), len(test), settings["batch_size"], runtime,
                          settings["loader"])
    if not runtime.is_main:
        return
    writer.close()
    log.info("best validation top-1 %.4f at epoch %d", best["accuracy"], best["epoch"])
    labels = np.array([video.label_index for video in test])
    log.info("test: %d videos, %d windows x %d crops; top-1 %.4f (video), %.4f (clip)", len(test),
             len(scores.clips), settings["test_crops"], accuracy(scores.videos, labels),
             accuracy(scores.clips, labels[scores.clip_videos]))
    save_scores(job.scores, scores, labels, [video.video_id for video in test], settings["test_crops"])
    checkpoints.save({"init": job.init, "view": job.view, "dataset": job.dataset["name"],
                      "pretrained": job.checkpoint, "model_config": model_settings,
                      "best_epoch": best["epoch"], "val_top1": best["accuracy"],
                      "model": {key: value.cpu() for key, value in model.state_dict().items()},
                      "num_classes": num_classes, "fingerprint": fingerprint, "history": history}, job.output)
    log.info("wrote %s and %s", job.output, job.scores)
    # after both outputs, never before: a kill in between leaves an unfinished state of the
    # last epoch, from which a rerun tests best.pt again and writes the same outputs without training
    checkpoints.mark_finished(state_path)

