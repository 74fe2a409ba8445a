"""Released checkpoints as initialisations (DESIGN.md section 11).

``import_checkpoint`` reads a checkpoint from outside this workflow and writes it as a
view checkpoint of ours, which ``cocon.train.pretrain.load_pretrained`` rebuilds and
fine-tuning starts from. Two formats are read:

- **DPC's** (``dpc/main.py`` and ``eval/test.py`` save them): a dict with ``state_dict``
  (keys prefixed ``module.`` by ``nn.DataParallel``), ``epoch``, ``net``, ``best_acc`` (a
  numpy float64 in pretraining files), ``optimizer`` and ``iteration``. The key map:
  ``backbone.conv1/bn1`` -> the stem, ``backbone.layer{L}.{b}`` -> stage L-1 block b
  (``downsample`` -> shortcut), ``agg.cell_list.0`` -> the ConvGRU cell (DPC registers the
  same cell again as ``agg.ConvGRUCell_00``: both copies must be equal, one is kept),
  ``network_pred`` -> the predictor. Fine-tuned (LC) files hold ``final_bn`` and
  ``final_fc.1`` instead of a predictor: their encoder and aggregator are imported, with
  the BatchNorm statistics, and the predictor is recorded as absent.
- **ours** (a CPC or joint checkpoint, or an earlier import), checked and passed on.

Nothing is unpickled but tensors, builtins and an explicit list of numpy scalar and dtype
types (under numpy 1.x and 2.x module names): any other global is refused, naming the file
and the type. Every key must map, every weight of the model must be there with its
shape, and what the file says (``net``, the weights' shapes) must agree with what the
options say; anything else is an error naming the file, the key and both values.

DPC's pretraining BatchNorm keeps no running statistics (``track_running_stats=False``);
the output records ``bn_statistics: absent``, and every stage that runs such an encoder in
eval mode recalibrates the statistics on training clips first.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cocon.data.clips import VIEW_CHANNELS
from cocon.models import DPC
from cocon.models.resnet2d3d import BASE_WIDTHS
from cocon.train import checkpoints

log = logging.getLogger(__name__)

# DPC's settings for UCF101 and Kinetics-400 (dpc/main.py's defaults): what a DPC file does not say
DPC_DEFAULTS = {"input_size": 128, "num_blocks": 8, "block_length": 5, "pred_steps": 3, "frame_stride": 3}
# the options a dataset config (``external:``) or ``cocon import-checkpoint`` may state
OPTIONS = ("view", "backbone", "width", "normalize", "input_size", "num_blocks", "block_length", "pred_steps",
           "frame_stride")
BLOCKS_PER_STAGE = {(2, 2, 2, 2): "resnet18", (3, 4, 6, 3): "resnet34"}
DPC_PRETRAINING, DPC_LC, COCON = "DPC pretraining", "DPC fine-tuned classifier (LC)", "cocon"


class CheckpointError(ValueError):
    """A checkpoint that is refused: unsafe, malformed, or not what the options say."""


def _numpy_allowlist() -> list:
    """The numpy globals a checkpoint may name: the scalar constructor and dtypes that
    pickled numpy scalars (``best_acc``) reference, under the module names numpy 1.x
    (``numpy.core``) and 2.x (``numpy._core``) write."""
    core = getattr(np, "_core", None) or np.core
    scalar = core.multiarray.scalar
    allowed = [(scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"),
               (np.dtype, "numpy.dtype")]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:  # numpy >= 1.25 pickles a dtype through its class
        for name in ("Float64DType", "Float32DType", "Float16DType", "Int64DType", "Int32DType", "BoolDType"):
            allowed.append((getattr(dtypes, name), f"numpy.dtypes.{name}"))
    return allowed


NUMPY_ALLOWLIST = _numpy_allowlist()


def read_untrusted(path: str | os.PathLike) -> dict:
    """A checkpoint from elsewhere, loaded with ``weights_only=True`` and ``NUMPY_ALLOWLIST``:
    never unpickling code. A refused global is named in the error."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    with torch.serialization.safe_globals(NUMPY_ALLOWLIST):
        try:
            state = _load(path)
        except pickle.UnpicklingError as error:
            refused = re.search(r"GLOBAL (\S+) was not an allowed global", str(error))
            if refused:
                raise CheckpointError(
                    f"{path}: refused: it holds a {refused.group(1)}, which is not a tensor, a number, a string, "
                    "a container of them or a numpy scalar; unpickling it could run code, so it is not "
                    "loaded") from None
            raise CheckpointError(f"{path}: not a readable checkpoint ({_first_line(error)})") from None
        except (RuntimeError, EOFError, OSError, ValueError, KeyError) as error:
            raise CheckpointError(f"{path}: not a readable checkpoint ({_first_line(error)})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a checkpoint dict")
    return state


def _load(path: Path) -> dict:
    try:
        # memory-mapped: planning reads a file of hundreds of MB without reading its tensors
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as error:
        if "mmap" not in str(error):
            raise
        # a file of the pre-1.6 (non-zip) format cannot be mapped
        return torch.load(path, map_location="cpu", weights_only=True)


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[-1] if text and "WeightsUnpickler" in text[-1] else (text[0] if text else type(error).__name__)


@dataclass
class Imported:
    """A checkpoint read and checked: the weights under our names and the model they build."""

    source: str
    format: str                       # DPC_PRETRAINING, DPC_LC or COCON
    model_config: dict                # cocon.train.pretrain.model_config's keys
    weights: dict[str, torch.Tensor]  # our keys
    bn_statistics: str                # "stored" or "absent" (recalibrate before eval mode)
    predictor: str                    # "stored" or "absent"
    metadata: dict = field(default_factory=dict)   # epoch, net, best_acc, iteration of the file
    not_imported: list[str] = field(default_factory=list)  # recognised and left out, with why
    notes: list[str] = field(default_factory=list)

    def payload(self, sha256: str) -> dict:
        """The output file: a view checkpoint of ours (``checkpoints.view_model`` reads it)."""
        return {"method": "external", "view": self.model_config["view"], "dataset": None,
                "epoch": self.metadata.get("epoch"),
                # copies: the file's tensors may be memory-mapped views of storages shared with others
                "model": {key: value.clone() for key, value in self.weights.items()},
                "model_config": self.model_config,
                "bn_statistics": self.bn_statistics, "predictor": self.predictor,
                "imported": {"source": self.source, "sha256": sha256, "format": self.format,
                             "metadata": self.metadata, "not_imported": self.not_imported, "notes": self.notes}}

    def summary(self) -> str:
        config = self.model_config
        return (f"{self.source}: {self.format}, {config['backbone']} {config['view']} at {config['input_size']} px, "
                f"{config['num_blocks']} blocks of {config['block_length']} frames (1 in {config['frame_stride']}), "
                f"normalize {str(config['normalize']).lower()}; " + "; ".join(self.notes))


_DPC_KEYS = [
    (re.compile(r"backbone\.conv1\.(weight)"), r"encoder.stem.0.\1"),
    (re.compile(r"backbone\.bn1\.(\w+)"), r"encoder.stem.1.\1"),
    (re.compile(r"backbone\.layer([1-4])\.(\d+)\.(conv1|bn1|conv2|bn2)\.(\w+)"), None),
    (re.compile(r"backbone\.layer([1-4])\.(\d+)\.downsample\.([01])\.(\w+)"), None),
    (re.compile(r"agg\.cell_list\.0\.((?:reset|update|out)_gate\.(?:weight|bias))"), r"aggregator.cell.\1"),
    (re.compile(r"network_pred\.([02]\.(?:weight|bias))"), r"predictor.\1"),
]
_DUPLICATE_CELL = re.compile(r"agg\.ConvGRUCell_00\.((?:reset|update|out)_gate\.(?:weight|bias))")
_LC_HEAD = re.compile(r"final_bn\.\w+|final_fc\.1\.(?:weight|bias)")
_RUNNING = ("running_mean", "running_var", "num_batches_tracked")


def _our_key(key: str) -> str | None:
    """Our name of a DPC ``state_dict`` key (without ``module.``), or None if it is not one of
    the encoder, ConvGRU cell or predictor keys."""
    for pattern, replacement in _DPC_KEYS:
        match = pattern.fullmatch(key)
        if match is None:
            continue
        if replacement is not None:
            return match.expand(replacement)
        layer, block, module, leaf = match.groups()
        if "downsample" in key:
            return f"encoder.stages.{int(layer) - 1}.{block}.shortcut.{module}.{leaf}"
        return f"encoder.stages.{int(layer) - 1}.{block}.{module}.{leaf}"
    return None


def _without_data_parallel_prefix(state_dict: dict, path) -> dict:
    prefixed = [key.startswith("module.") for key in state_dict]
    if any(prefixed) and not all(prefixed):
        plain = next(key for key, has in zip(state_dict, prefixed) if not has)
        raise CheckpointError(f"{path}: state_dict mixes keys with and without the nn.DataParallel prefix "
                              f"'module.' (e.g. {plain!r})")
    return {key.removeprefix("module."): value for key, value in state_dict.items()}


def _check_option(path, name: str, stated, found, why: str) -> None:
    if stated is not None and stated != found:
        raise CheckpointError(f"{path}: {name}: the options say {stated!r}, but {why} {found!r}")


def _dpc_backbone(path, keys, net, options) -> str:
    blocks = {}
    for key in keys:
        match = re.fullmatch(r"backbone\.layer([1-4])\.(\d+)\..*", key)
        if match:
            layer, block = int(match.group(1)), int(match.group(2))
            blocks[layer] = max(blocks.get(layer, 0), block + 1)
    counts = tuple(blocks.get(layer, 0) for layer in (1, 2, 3, 4))
    found = BLOCKS_PER_STAGE.get(counts)
    if found is None:
        raise CheckpointError(f"{path}: the encoder has {list(counts)} blocks per stage, neither a resnet18 "
                              f"([2, 2, 2, 2]) nor a resnet34 ([3, 4, 6, 3])")
    if net is not None:
        if not isinstance(net, str):
            raise CheckpointError(f"{path}: net is a {type(net).__name__}, not a backbone name")
        if net != found:
            raise CheckpointError(f"{path}: net says {net!r}, but the weights are a {found} "
                                  f"({list(counts)} blocks per stage)")
    _check_option(path, "backbone", options.get("backbone"), found,
                  f"the weights ({list(counts)} blocks per stage) are a")
    return found


def _dpc_config(path, mapped: dict, backbone: str, options: dict) -> dict:
    stem = mapped["encoder.stem.0.weight"]
    if stem.dim() != 5:
        raise CheckpointError(f"{path}: backbone.conv1.weight has shape {list(stem.shape)}, not that of a "
                              "Conv3d weight [out, in, 1, 7, 7]")
    channels = {count: view for view, count in VIEW_CHANNELS.items()}
    view = channels.get(stem.shape[1])
    if view is None:
        raise CheckpointError(f"{path}: backbone.conv1.weight reads {stem.shape[1]} input channels, none of the "
                              f"views' ({VIEW_CHANNELS})")
    _check_option(path, "view", options.get("view"), view,
                  f"backbone.conv1.weight reads {stem.shape[1]} channels, the input of a")
    width = stem.shape[0] / BASE_WIDTHS[0]
    _check_option(path, "width", options.get("width"), width,
                  f"backbone.conv1.weight has {stem.shape[0]} output channels, width")
    if options.get("normalize"):
        raise CheckpointError(f"{path}: normalize: the options say true (CoCon's L2-normalised features), but a "
                              "DPC checkpoint is plain DPC, trained on raw features: normalize is false for it")
    geometry = {key: options.get(key) if options.get(key) is not None else DPC_DEFAULTS[key] for key in DPC_DEFAULTS}
    return {"view": view, "backbone": backbone, "width": width, "normalize": False, **geometry}


def _model_shapes(config: dict) -> dict[str, torch.Size]:
    """Key -> shape of the state dict of the model ``config`` builds."""
    keys = ("backbone", "view", "num_blocks", "pred_steps", "normalize", "width")
    return _shapes(*(config[key] for key in keys))


@functools.lru_cache(maxsize=8)
def _shapes(backbone, view, num_blocks, pred_steps, normalize, width) -> dict[str, torch.Size]:
    model = DPC(backbone=backbone, in_channels=VIEW_CHANNELS[view], num_blocks=num_blocks, pred_steps=pred_steps,
                normalize=normalize, width=width)
    return {key: value.shape for key, value in model.state_dict().items()}


def _batchnorm_layers(shapes) -> list[str]:
    return sorted(key.removesuffix(".running_mean") for key in shapes if key.endswith(".running_mean"))


def _statistics(path, weights: dict, shapes, where: str) -> str:
    """Whether the encoder's BatchNorm layers carry running statistics: all of them or none."""
    layers = [layer for layer in _batchnorm_layers(shapes) if layer.startswith("encoder.")]
    has = {layer: f"{layer}.running_mean" in weights and f"{layer}.running_var" in weights for layer in layers}
    if all(has.values()):
        return "stored"
    if not any(f"{layer}.{name}" in weights for layer in layers for name in _RUNNING):
        return "absent"
    with_, without = next(layer for layer, value in has.items() if value), \
        next(layer for layer, value in has.items() if not value)
    raise CheckpointError(f"{path}: some BatchNorm layers carry running statistics and some do not "
                          f"({where}: {with_} has them, {without} has not)")


def _check_weights(path, weights: dict, shapes, names: dict[str, str], predictor: str, statistics: str) -> None:
    """Every weight has the model's shape, and the model has nothing the file lacks but what
    it says it lacks. ``names``: our key -> the file's (for the messages)."""
    for key, value in weights.items():
        if key not in shapes:
            raise CheckpointError(f"{path}: {names.get(key, key)}: no such weight in a {_describe(shapes)} model")
        if value.shape != shapes[key]:
            raise CheckpointError(f"{path}: {names.get(key, key)}: shape {list(value.shape)} in the file, "
                                  f"{list(shapes[key])} in the model ({key})")
    missing = [key for key in shapes if key not in weights and not checkpoints.allowed_missing(key, predictor, statistics)]
    if missing:
        raise CheckpointError(f"{path}: {len(missing)} weights of the model are not in the file: "
                              f"{', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''}")


def _describe(shapes) -> str:
    stages = sum(1 for key in shapes if re.fullmatch(r"encoder\.stages\.\d+\.\d+\.conv1\.weight", key))
    return {8: "resnet18", 16: "resnet34"}.get(stages, f"{stages}-block")


def _from_dpc(path, state: dict, options: dict) -> Imported:
    state_dict = state["state_dict"]
    if not isinstance(state_dict, dict) or not all(isinstance(value, torch.Tensor) for value in state_dict.values()):
        raise CheckpointError(f"{path}: state_dict is not a dict of tensors")
    keys = _without_data_parallel_prefix(state_dict, path)
    mapped, names, duplicate, head, unknown = {}, {}, {}, [], []
    for key, value in keys.items():
        ours = _our_key(key)
        if ours is not None:
            mapped[ours], names[ours] = value, key
        elif _DUPLICATE_CELL.fullmatch(key):
            duplicate[_DUPLICATE_CELL.fullmatch(key).group(1)] = value
        elif _LC_HEAD.fullmatch(key):
            head.append(key)
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(f"{path}: {len(unknown)} keys of state_dict are not DPC's encoder (backbone.*), "
                              f"ConvGRU (agg.*), predictor (network_pred.*) or classifier (final_bn, final_fc.1): "
                              f"{', '.join(sorted(unknown)[:6])}{' ...' if len(unknown) > 6 else ''}")
    has_predictor = any(key.startswith("predictor.") for key in mapped)
    if has_predictor and head:
        raise CheckpointError(f"{path}: holds both a predictor (network_pred) and a classifier (final_bn, "
                              "final_fc): neither a DPC pretraining nor a fine-tuned (LC) file")
    if not has_predictor and not head:
        raise CheckpointError(f"{path}: holds neither a predictor (network_pred.*, pretraining files) nor a "
                              "classifier (final_bn, final_fc.1, fine-tuned LC files)")
    if "encoder.stem.0.weight" not in mapped:
        raise CheckpointError(f"{path}: backbone.conv1.weight is missing")
    backbone = _dpc_backbone(path, keys, state.get("net"), options)
    config = _dpc_config(path, mapped, backbone, options)
    shapes = _model_shapes(config)
    statistics = _statistics(path, mapped, shapes, "backbone")
    predictor = "stored" if has_predictor else "absent"
    _check_weights(path, mapped, shapes, names, predictor, statistics)
    notes = []
    # DPC's ConvGRU registers its one cell twice (cell_list.0 and ConvGRUCell_00): one copy is kept
    for name, value in duplicate.items():
        kept = mapped.get(f"aggregator.cell.{name}")
        if kept is None:
            raise CheckpointError(f"{path}: agg.ConvGRUCell_00.{name} has no agg.cell_list.0.{name} beside it")
        if kept.shape != value.shape or not torch.equal(kept, value):
            difference = (f"shapes {list(kept.shape)} and {list(value.shape)}" if kept.shape != value.shape
                          else f"largest difference {float((kept - value).abs().max()):.3g}")
            raise CheckpointError(f"{path}: agg.cell_list.0.{name} and agg.ConvGRUCell_00.{name} differ "
                                  f"({difference}); in DPC they are the same module registered twice")
    if duplicate:
        if len(duplicate) != 6:
            raise CheckpointError(f"{path}: agg.ConvGRUCell_00 holds {len(duplicate)} of the cell's 6 tensors")
        notes.append("ConvGRU: agg.cell_list.0 and its copy agg.ConvGRUCell_00 are equal; one kept")
    not_imported = ["optimizer: the state of DPC's own training, not needed to start from its weights"]
    if head:
        classes = keys["final_fc.1.weight"].shape[0] if "final_fc.1.weight" in keys else None
        not_imported.append(f"final_bn, final_fc.1: the fine-tuned classifier head ({classes} classes); "
                            "fine-tuning trains a head of its own")
        notes.append("predictor absent: a fine-tuned (LC) file has none; it stays at its initialisation (fine-tuning and the analyses do not use it)")
    if statistics == "absent":
        notes.append("BatchNorm: no running statistics (DPC's pretraining keeps none, track_running_stats=False); "
                     "every stage that runs this encoder in eval mode recalibrates them on training clips first")
    else:
        notes.append("BatchNorm: running statistics stored")
    metadata = {"epoch": _plain(state.get("epoch")), "net": state.get("net"),
                "best_acc": _plain(state.get("best_acc")), "iteration": _plain(state.get("iteration"))}
    return Imported(str(path), DPC_LC if head else DPC_PRETRAINING, config, mapped, statistics, predictor, metadata,
                    not_imported, notes)


def _plain(value):
    """A number of the file (possibly a numpy scalar or a 0-d tensor) as a Python number."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _from_cocon(path, state: dict, options: dict) -> Imported:
    view = options.get("view")
    if "models" in state:
        if view is None:
            raise CheckpointError(f"{path}: a joint checkpoint of {sorted(state['models'])}: say which view to "
                                  "import (view)")
        if view not in state["models"]:
            raise CheckpointError(f"{path}: a joint checkpoint of {sorted(state['models'])}, without {view}")
        weights, config = state["models"][view], dict(state["model_configs"][view])
    else:
        weights, config = state["model"], dict(state["model_config"])
        _check_option(path, "view", view, config["view"], "the checkpoint holds a model of view")
    for key in OPTIONS:
        if key != "view":
            _check_option(path, key, options.get(key), config[key], "the checkpoint's model has")
    statistics, predictor = state.get("bn_statistics", "stored"), state.get("predictor", "stored")
    shapes = _model_shapes(config)
    _check_weights(path, weights, shapes, {}, predictor, statistics)
    notes = [f"a {state.get('method', 'cocon')} checkpoint of {state.get('dataset') or 'an earlier import'}"]
    if statistics == "absent":
        notes.append("BatchNorm: no running statistics; every stage that runs this encoder in eval mode "
                     "recalibrates them on training clips first")
    if predictor == "absent":
        notes.append("predictor absent")
    metadata = {"epoch": _plain(state.get("epoch")), "method": state.get("method"), "dataset": state.get("dataset")}
    return Imported(str(path), COCON, config, dict(weights), statistics, predictor, metadata, [], notes)


def inspect_checkpoint(path: str | os.PathLike, options: dict | None = None) -> Imported:
    """Read ``path`` (DPC's format or ours) and check it against ``options`` (keys of OPTIONS;
    None or absent: what the file says, else DPC's defaults)."""
    options = {key: value for key, value in (options or {}).items() if value is not None}
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise CheckpointError(f"{path}: unknown options {unknown}; known: {list(OPTIONS)}")
    state = read_untrusted(path)
    if "state_dict" in state:
        return _from_dpc(path, state, options)
    if ("model" in state and "model_config" in state) or ("models" in state and "model_configs" in state):
        return _from_cocon(path, state, options)
    raise CheckpointError(f"{path}: neither a DPC checkpoint (state_dict, net, epoch, ...) nor one of ours "
                          f"(model, model_config); its keys: {sorted(map(str, state))[:8]}")


@functools.lru_cache(maxsize=32)
def _cached_config(path: str, stamp: tuple, options: tuple) -> dict:
    imported = inspect_checkpoint(path, dict(options))
    return {**imported.model_config, "bn_statistics": imported.bn_statistics, "format": imported.format}


def checkpoint_model_config(path: str | os.PathLike, options: dict | None = None) -> dict:
    """The model config ``import_checkpoint`` would write for ``path`` and ``options``, plus its
    ``bn_statistics`` and ``format``, or the CheckpointError it would raise: planning calls it,
    so that a contradiction is refused before any job runs. Cached per file version."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    status = path.stat()
    return dict(_cached_config(str(path), (status.st_mtime_ns, status.st_size),
                               tuple(sorted((options or {}).items()))))


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def import_checkpoint(source: str | os.PathLike, output: str | os.PathLike, options: dict | None = None) -> Imported:
    """Read ``source``, check it, and write it to ``output`` as a view checkpoint of ours."""
    imported = inspect_checkpoint(source, options)
    checkpoints.save(imported.payload(file_sha256(source)), output)
    log.info("imported %s", imported.summary())
    log.info("wrote %s", output)
    return imported
