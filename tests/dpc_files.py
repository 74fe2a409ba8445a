"""DPC-format checkpoints written from the published key names and layout, and DPC's forward
passes written from the same names, for tests and benchmarks. Nothing here runs or imports
DPC's code: the layout is DPC's as its repository (TengdaHan/DPC: backbone/resnet_2d3d.py,
backbone/convrnn.py, dpc/model_3d.py, eval/model_3d_lc.py) defines it and DESIGN.md
section 11 states it:

- ``backbone.conv1`` Conv3d(C, 64, (1, 7, 7)), ``backbone.bn1``; ``backbone.layer{1..4}.{b}``
  with ``conv1``, ``bn1``, ``conv2``, ``bn2`` and, in each stage's first block where the
  shape changes, ``downsample.0`` (1x1x1 Conv3d) and ``downsample.1`` (BatchNorm3d); widths
  64, 128, 256, 256; 1x3x3 kernels in layers 1-2, 3x3x3 in layers 3-4; stride 2 in each
  stage's first block from layer 2 on (in time too from layer 3); no ReLU after the last block.
- ``agg.cell_list.0.{reset,update,out}_gate`` Conv2d(512, 256, 1), the same module again as
  ``agg.ConvGRUCell_00``; ``network_pred.0`` and ``network_pred.2`` Conv2d(256, 256, 1).
- Fine-tuned (LC) files: ``final_bn`` BatchNorm1d(256) and ``final_fc.1`` Linear(256, classes)
  instead of the predictor; their BatchNorm layers track running statistics.
"""
from __future__ import annotations

import math
import pickle
import types

import numpy as np
import torch
import torch.nn.functional as F

BLOCKS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}
PLANES = (64, 128, 256, 256)
HIDDEN = 256


def dpc_shapes(network: str = "resnet18", in_channels: int = 3, lc: bool = False, num_classes: int = 101,
               running_stats: bool = False) -> dict[str, tuple[int, ...]]:
    """Key -> shape of DPC's state_dict (without ``module.``), in DPC's order."""
    shapes: dict[str, tuple[int, ...]] = {}

    def batchnorm(prefix: str, channels: int) -> None:
        shapes[f"{prefix}.weight"] = shapes[f"{prefix}.bias"] = (channels,)
        if running_stats:
            shapes[f"{prefix}.running_mean"] = shapes[f"{prefix}.running_var"] = (channels,)
            shapes[f"{prefix}.num_batches_tracked"] = ()

    shapes["backbone.conv1.weight"] = (64, in_channels, 1, 7, 7)
    batchnorm("backbone.bn1", 64)
    inplanes = 64
    for layer, (planes, blocks) in enumerate(zip(PLANES, BLOCKS[network]), start=1):
        kernel = (1, 3, 3) if layer <= 2 else (3, 3, 3)
        for block in range(blocks):
            prefix = f"backbone.layer{layer}.{block}"
            shapes[f"{prefix}.conv1.weight"] = (planes, inplanes, *kernel)
            batchnorm(f"{prefix}.bn1", planes)
            shapes[f"{prefix}.conv2.weight"] = (planes, planes, *kernel)
            batchnorm(f"{prefix}.bn2", planes)
            if block == 0 and (layer > 1 or inplanes != planes):
                shapes[f"{prefix}.downsample.0.weight"] = (planes, inplanes, 1, 1, 1)
                batchnorm(f"{prefix}.downsample.1", planes)
            inplanes = planes
    for cell in ("agg.ConvGRUCell_00", "agg.cell_list.0"):
        for gate in ("reset_gate", "update_gate", "out_gate"):
            shapes[f"{cell}.{gate}.weight"] = (HIDDEN, 2 * HIDDEN, 1, 1)
            shapes[f"{cell}.{gate}.bias"] = (HIDDEN,)
    if lc:
        shapes["final_bn.weight"] = shapes["final_bn.bias"] = (HIDDEN,)
        shapes["final_bn.running_mean"] = shapes["final_bn.running_var"] = (HIDDEN,)
        shapes["final_bn.num_batches_tracked"] = ()
        shapes["final_fc.1.weight"] = (num_classes, HIDDEN)
        shapes["final_fc.1.bias"] = (num_classes,)
    else:
        for index in (0, 2):
            shapes[f"network_pred.{index}.weight"] = (HIDDEN, HIDDEN, 1, 1)
            shapes[f"network_pred.{index}.bias"] = (HIDDEN,)
    return shapes


def dpc_state_dict(network: str = "resnet18", in_channels: int = 3, lc: bool = False, num_classes: int = 101,
                   running_stats: bool | None = None, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights in DPC's layout, scaled so that activations stay of order one; the
    ConvGRU cell's two registrations share their tensors, as in a DPC file. LC files track
    running statistics unless ``running_stats`` says otherwise."""
    generator = torch.Generator().manual_seed(seed)
    stats = lc if running_stats is None else running_stats
    shapes = dpc_shapes(network, in_channels, lc, num_classes, stats)
    state: dict[str, torch.Tensor] = {}
    for key, shape in shapes.items():
        if key.startswith("agg.cell_list.0."):
            state[key] = state[key.replace("agg.cell_list.0.", "agg.ConvGRUCell_00.")]
        elif key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1000, dtype=torch.long)
        elif key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(shape, generator=generator)
        elif key.endswith("running_mean"):
            state[key] = 0.1 * torch.randn(shape, generator=generator)
        elif len(shape) == 1 and key.endswith("weight"):  # BatchNorm scale
            state[key] = 0.5 + torch.rand(shape, generator=generator)
        elif len(shape) == 1:  # biases
            state[key] = 0.1 * torch.randn(shape, generator=generator)
        else:
            fan_in = math.prod(shape[1:])
            state[key] = torch.randn(shape, generator=generator) * math.sqrt(2.0 / fan_in)
    return state


def write_dpc_checkpoint(path, network: str = "resnet18", lc: bool = False, net: str | None = None,
                         state_dict: dict | None = None, seed: int = 0, pickle_module=pickle,
                         legacy_format: bool = False, **extra) -> dict[str, torch.Tensor]:
    """A file as DPC's ``main.py`` (pretraining) or ``eval/test.py`` (LC) saves it; returns its
    state_dict without the ``module.`` prefix. ``extra`` adds or replaces top-level entries;
    ``legacy_format`` writes PyTorch's format before 1.6 (not a zip file), as files of 2019 are."""
    state = state_dict if state_dict is not None else dpc_state_dict(network, lc=lc, seed=seed)
    first = next(iter(state.values()))
    optimizer = {"state": {0: {"step": 12, "exp_avg": torch.zeros_like(first), "exp_avg_sq": torch.zeros_like(first)}},
                 "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-5,
                                   "amsgrad": False, "params": list(range(len(state)))}]}
    torch.save({"epoch": 100, "net": net or network, "state_dict": {f"module.{key}": value for key, value in state.items()},
                "best_acc": np.float64(0.6135), "optimizer": optimizer, "iteration": 41200, **extra}, path,
               pickle_module=pickle_module, _use_new_zipfile_serialization=not legacy_format)
    return state


# ---- DPC's forward passes, from the key names ---------------------------------------------

def _batchnorm(state, prefix, x, batch_statistics: bool):
    running = state.get(f"{prefix}.running_mean")
    use_batch = batch_statistics or running is None
    return F.batch_norm(x, None if use_batch else running, None if use_batch else state[f"{prefix}.running_var"],
                        state[f"{prefix}.weight"], state[f"{prefix}.bias"], training=use_batch, eps=1e-5)


def _conv3d(state, key, x, stride):
    weight = state[key]
    padding = tuple(size // 2 for size in weight.shape[2:])
    return F.conv3d(x, weight, stride=stride, padding=padding)


def dpc_backbone(state, x, network: str, batch_statistics: bool):
    """resnet{18,34}_2d3d_full's forward: ``[B, C, T, H, W]`` -> ``[B, 256, T', H/32, W/32]``."""
    x = F.relu(_batchnorm(state, "backbone.bn1", F.conv3d(x, state["backbone.conv1.weight"], stride=(1, 2, 2),
                                                          padding=(0, 3, 3)), batch_statistics))
    x = F.max_pool3d(x, kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
    blocks = BLOCKS[network]
    for layer, count in enumerate(blocks, start=1):
        for block in range(count):
            prefix = f"backbone.layer{layer}.{block}"
            first = block == 0 and layer > 1
            stride = (1, 1, 1) if not first else ((1, 2, 2) if layer <= 2 else (2, 2, 2))
            out = F.relu(_batchnorm(state, f"{prefix}.bn1", _conv3d(state, f"{prefix}.conv1.weight", x, stride),
                                    batch_statistics))
            out = _batchnorm(state, f"{prefix}.bn2", _conv3d(state, f"{prefix}.conv2.weight", out, 1), batch_statistics)
            if f"{prefix}.downsample.0.weight" in state:
                x = _batchnorm(state, f"{prefix}.downsample.1",
                               F.conv3d(x, state[f"{prefix}.downsample.0.weight"], stride=stride), batch_statistics)
            x = out + x
            if not (layer == 4 and block == count - 1):
                x = F.relu(x)
    return x


def _gru_step(state, x, hidden):
    cell = "agg.cell_list.0"
    if hidden is None:
        hidden = torch.zeros(x.shape[0], HIDDEN, *x.shape[2:])
    combined = torch.cat([x, hidden], dim=1)
    update = torch.sigmoid(F.conv2d(combined, state[f"{cell}.update_gate.weight"], state[f"{cell}.update_gate.bias"]))
    reset = torch.sigmoid(F.conv2d(combined, state[f"{cell}.reset_gate.weight"], state[f"{cell}.reset_gate.bias"]))
    out = torch.tanh(F.conv2d(torch.cat([x, hidden * reset], dim=1), state[f"{cell}.out_gate.weight"],
                              state[f"{cell}.out_gate.bias"]))
    return hidden * (1 - update) + out * update


def dpc_scores(state, blocks, network: str, pred_steps: int) -> torch.Tensor:
    """DPC_RNN's score matrix (dpc/model_3d.py) ``[B, P, S*S, B, P, S*S]`` for ``blocks``
    ``[B, N, C, K, H, W]``, with batch statistics (DPC's pretraining BatchNorm keeps none) and
    no dropout: the mean over time, then the ReLU into the ConvGRU; targets before the ReLU."""
    batch, num_blocks = blocks.shape[:2]
    feature = dpc_backbone(state, blocks.flatten(0, 1), network, batch_statistics=True).mean(dim=2)
    feature_inf = feature.view(batch, num_blocks, *feature.shape[1:])
    feature = F.relu(feature_inf)
    hidden = None
    for step in range(num_blocks - pred_steps):
        hidden = _gru_step(state, feature[:, step], hidden)
    predictions = []
    for _ in range(pred_steps):
        prediction = F.conv2d(F.relu(F.conv2d(hidden, state["network_pred.0.weight"], state["network_pred.0.bias"])),
                              state["network_pred.2.weight"], state["network_pred.2.bias"])
        predictions.append(prediction)
        hidden = _gru_step(state, F.relu(prediction), hidden)
    pred = torch.stack(predictions, dim=1).flatten(3)                 # [B, P, D, S*S]
    target = feature_inf[:, num_blocks - pred_steps:].flatten(3)      # [B, P, D, S*S]
    return torch.einsum("bpdi,cqdj->bpicqj", pred, target)


def dpc_lc_features(state, blocks, network: str) -> torch.Tensor:
    """LC's context (eval/model_3d_lc.py), eval mode: the ReLU of the encoder output, then the
    mean over time; the ConvGRU over every block; its last state pooled over locations."""
    batch, num_blocks = blocks.shape[:2]
    feature = F.relu(dpc_backbone(state, blocks.flatten(0, 1), network, batch_statistics=False)).mean(dim=2)
    feature = feature.view(batch, num_blocks, *feature.shape[1:])
    hidden = None
    for step in range(num_blocks):
        hidden = _gru_step(state, feature[:, step], hidden)
    return hidden.mean(dim=(2, 3))


def dpc_lc_logits(state, blocks, network: str, head: dict | None = None) -> torch.Tensor:
    """LC's output in eval mode: its context, final_bn, (dropout off), final_fc.1. ``head``:
    the BatchNorm1d and linear weights under DPC's names, if not in ``state``."""
    weights = {**state, **(head or {})}
    context = dpc_lc_features(state, blocks, network)
    context = F.batch_norm(context, weights["final_bn.running_mean"], weights["final_bn.running_var"],
                           weights["final_bn.weight"], weights["final_bn.bias"], training=False, eps=1e-5)
    return F.linear(context, weights["final_fc.1.weight"], weights["final_fc.1.bias"])


class _Numpy1Pickler(pickle._Pickler):
    """Pickles numpy scalars under numpy 1.x's module names (``numpy.core``), as files written
    before numpy 2 name them, whatever numpy writes the file."""

    def save_global(self, obj, name=None):
        module = getattr(obj, "__module__", None) or ""
        if module.startswith("numpy._core"):
            self.write(pickle.GLOBAL + f"{module.replace('numpy._core', 'numpy.core', 1)}\n{obj.__qualname__}\n".encode())
            self.memoize(obj)
            return
        super().save_global(obj, name)


NUMPY1_PICKLE = types.SimpleNamespace(__name__="numpy1_pickle", Pickler=_Numpy1Pickler)
