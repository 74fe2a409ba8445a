"""Checkpoints: written atomically, read with ``weights_only=True`` (no pickled code).

A training job (pretraining, fine-tuning) keeps a state folder beside its output:
``last.pt``, the state after its last finished epoch or its last step checkpoint (on a
stop signal, or every ``checkpoint_minutes``), from which a stopped run resumes
(``resume_training``), plus the run's records (``metrics.csv``, ``tensorboard/``, and for
fine-tuning ``best.pt``). Once the job has written its final output it marks ``last.pt``
finished (``mark_finished``), and a finished state is never resumed: any later run of the
job (``snakemake --forcerun``, or a job re-planned because its inputs changed) trains from
scratch, and its records start over (``clear_records``). The mark comes after the output:
a kill between the two leaves the unmarked state of the last epoch, and the rerun resumes
with nothing left to train and writes the same output again.
"""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import torch

from cocon.train.distributed import Runtime, gather_objects

log = logging.getLogger(__name__)


def save(payload: dict, path: str | os.PathLike) -> None:
    """Write ``path`` through a temporary file, so a kill never leaves half a checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        torch.save(payload, handle)
        handle.flush()
        # on disk before the rename: after a node failure the name holds the old state or the new
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def load(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as error:
        raise ValueError(f"{path}: not a readable checkpoint ({error})") from error


# keys added after states were written, with the default that behaves as before they existed
LATER_KEYS = {"nodes": 1, "loader": "cpu", "precision": "auto"}


def fingerprint_settings(settings: dict) -> dict:
    """The settings of a training section that its state depends on: not how often the state
    is saved nor how long a collective waits; keys added later (LATER_KEYS) only when they are
    not at their default, so that a state written before the key existed still resumes."""
    skipped = {"checkpoint_minutes", "collective_timeout"} | {key for key, default in LATER_KEYS.items()
                                                             if settings.get(key, default) == default}
    return {key: value for key, value in settings.items() if key not in skipped}


def save_training_state(path, fingerprint: str, epoch: int, step: int, model, optimizer, scheduler,
                        history: list[dict], runtime: Runtime, local: dict | None = None, **extra) -> None:
    """Everything a stopped run needs to go on exactly as if never stopped: the state after
    the last finished ``epoch`` (-1: none yet) and ``step`` steps of the next one. Called by
    every process of a distributed run; each one's RNG state and ``local`` values (its sums
    of the epoch so far) are gathered, and the main process writes."""
    ranks = gather_objects({"torch_rng": torch.get_rng_state(),
                            "cuda_rng": torch.cuda.get_rng_state() if torch.cuda.is_initialized() else None,
                            "local": local or {}}, runtime)
    if runtime.is_main:
        save({"fingerprint": fingerprint, "epoch": epoch, "step": step, "model": model.state_dict(),
              "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "ranks": ranks,
              "history": history, **extra}, path)


def resume_training(path, fingerprint: str, model, optimizer, scheduler, rank: int = 0) -> dict | None:
    """Restore a stopped run's state into ``model``, ``optimizer``, ``scheduler`` and this
    process's RNG when ``path`` was written with the same settings (``fingerprint``) by a
    run that was stopped before it wrote its output, and return it with ``epoch`` (the last
    finished, -1: none), ``step`` (the steps of the next epoch already run) and ``local``
    (this process's values saved with it); None when there is nothing to resume: no state,
    one of other settings, or one of a finished run (``mark_finished``). On None the caller
    starts from scratch and should ``clear_records`` of the earlier run."""
    path = Path(path)
    if not path.exists():
        return None
    state = load(path)
    if state["fingerprint"] != fingerprint:
        log.info("%s was written with other settings; starting over", path)
        return None
    if state.get("finished"):
        log.info("starting over: %s belongs to a finished run", path)
        return None
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    # a state of an earlier version: written after an epoch, one process's RNG at its top level
    mine = state.get("ranks", [state])[rank]
    torch.set_rng_state(mine["torch_rng"])
    if mine["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(mine["cuda_rng"])
    return {**state, "step": state.get("step", 0), "local": mine.get("local", {})}


def mark_finished(path) -> None:
    """Mark the training state at ``path`` as that of a run that wrote its final output, so
    that ``resume_training`` never resumes it: a later run of the job starts over.

    Call it after the output is written, never before: a kill in between leaves an
    unmarked state of the last epoch, from which the rerun resumes, trains nothing and
    writes the same output again (marking first, a kill would cost a full retraining)."""
    path = Path(path)
    if path.exists():
        save({**load(path), "finished": True}, path)


RECORDS = ("metrics.csv", "tensorboard", "best.pt")


def clear_records(state_dir: str | os.PathLike) -> None:
    """Remove an earlier run's records (``RECORDS``: curves, TensorBoard events, best
    checkpoint) from ``state_dir`` when a run starts from scratch, so that they never mix
    with the new run's. ``last.pt`` stays until the new run's first epoch replaces it: it
    is finished or of other settings, so a kill before then starts over again too."""
    for name in RECORDS:
        path = Path(state_dir) / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        else:
            continue
        log.info("removed %s of an earlier run", path)


def view_model(path: str | os.PathLike, view: str) -> dict:
    """The ``view`` model of a pretrained checkpoint, as {"model": state dict, "model_config":
    ...}: a CPC checkpoint holds one view, a joint one (``joint.pt``) every view of its set."""
    state = load(path)
    if "models" in state:
        if view not in state["models"]:
            raise ValueError(f"{path}: a joint checkpoint of {sorted(state['models'])}, without {view}")
        return {"model": state["models"][view], "model_config": state["model_configs"][view]}
    if state["model_config"]["view"] != view:
        raise ValueError(f"{path}: a {state['model_config']['view']} model, not {view}")
    return state


def allowed_missing(key: str, predictor: str = "stored", bn_statistics: str = "stored") -> bool:
    """Whether a view checkpoint may lack the model's ``key``: the predictor when it says it has
    none (``predictor: absent``, an imported fine-tuned DPC file), the BatchNorm running
    statistics when it says it has none (``bn_statistics: absent``, an imported DPC
    pretraining file), and ``num_batches_tracked`` (a counter PyTorch added in 0.4.1, read only
    by cumulative averaging, which recalibration restarts)."""
    if key.startswith("predictor."):
        return predictor == "absent"
    if key.endswith(".num_batches_tracked"):
        return True
    return bn_statistics == "absent" and key.endswith((".running_mean", ".running_var"))


def load_weights(model: torch.nn.Module, chosen: dict, path: str | os.PathLike) -> None:
    """Load a view model of ``view_model`` into ``model``: every key, except what the checkpoint
    says it lacks (``allowed_missing``), which stays as the model was built. A caller that
    runs the model in eval mode recalibrates the statistics when ``needs_recalibration``."""
    predictor, statistics = chosen.get("predictor", "stored"), chosen.get("bn_statistics", "stored")
    missing, unexpected = model.load_state_dict(chosen["model"], strict=False)
    missing = [key for key in missing if not allowed_missing(key, predictor, statistics)]
    if missing or unexpected:
        raise ValueError(f"{path}: the checkpoint does not fit the model it describes: missing {missing[:6]}, "
                         f"unexpected {unexpected[:6]}")


def needs_recalibration(chosen: dict) -> bool:
    """Whether a view model of ``view_model`` lacks BatchNorm running statistics (an imported
    DPC pretraining file): eval mode would normalise with the initial mean 0 and variance 1."""
    return chosen.get("bn_statistics", "stored") == "absent"
