"""BatchNorm running statistics recomputed from data with fixed weights ("precise BN")."""
from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn


def batchnorm_layers(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [layer for layer in module.modules() if isinstance(layer, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def recalibrate_statistics(layers: list[nn.modules.batchnorm._BatchNorm], batches: Iterable,
                           forward: Callable[[object], object], max_batches: int) -> int:
    """Reset the running statistics of ``layers`` and recompute them as the plain average over
    the first ``max_batches`` of ``batches``, each run through ``forward`` (the caller puts the
    layers in train mode). Returns the number of batches used."""
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative average
    used = 0
    try:
        for batch in batches:
            if used == max_batches:
                break
            forward(batch)
            used += 1
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    return used
