"""Per-epoch training curves: a CSV beside the state, and TensorBoard."""
from __future__ import annotations

import csv
import os
from pathlib import Path


def write_metrics(path: Path, history: list[dict]) -> None:
    """Rewrite ``path`` with one row per epoch (atomically: a reader never sees half a file)."""
    columns = list(dict.fromkeys(key for row in history for key in row))
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        writer.writerows(history)
    os.replace(tmp, path)


def tensorboard(state_dir: str | os.PathLike):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(Path(state_dir) / "tensorboard"))
