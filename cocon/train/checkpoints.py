"""Checkpoints: written atomically, read with ``weights_only=True`` (no pickled code)."""
from __future__ import annotations

import os
from pathlib import Path

import torch


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
