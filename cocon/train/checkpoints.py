"""Checkpoints: written atomically, read with ``weights_only=True`` (no pickled code)."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

log = logging.getLogger(__name__)


def save(payload: dict, path: str | os.PathLike) -> None:
    """Write ``path`` through a temporary file, so a kill never leaves half a checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as error:
        raise ValueError(f"{path}: not a readable checkpoint ({error})") from error


def save_training_state(path, fingerprint: str, epoch: int, model, optimizer, scheduler, history: list[dict],
                        **extra) -> None:
    """Everything a killed run needs to go on after ``epoch`` exactly as if never stopped."""
    save({"fingerprint": fingerprint, "epoch": epoch, "model": model.state_dict(),
          "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
          "torch_rng": torch.get_rng_state(),
          "cuda_rng": torch.cuda.get_rng_state() if torch.cuda.is_initialized() else None,
          "history": history, **extra}, path)


def resume_training(path, fingerprint: str, model, optimizer, scheduler) -> dict | None:
    """Restore the state of the last finished epoch into ``model``, ``optimizer`` and
    ``scheduler`` when ``path`` was written with the same settings (``fingerprint``), and
    return it (epoch, history, extras); None when there is nothing to resume."""
    path = Path(path)
    if not path.exists():
        return None
    state = load(path)
    if state["fingerprint"] != fingerprint:
        log.info("%s was written with other settings; starting over", path)
        return None
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda_rng"])
    log.info("resuming from %s after epoch %d", path, state["epoch"])
    return state


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
