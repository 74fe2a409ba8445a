"""One process per GPU under torchrun; a plain single process otherwise.

Besides the training's own process group (NCCL on GPUs, gloo on CPUs), a distributed run
has a gloo group for the small host-side agreements of the loop: whether to stop or save
after a step (``agree``), and gathering each process's RNG state for a checkpoint
(``gather_objects``). Every collective of both groups waits at most the configured timeout
(``pretrain.collective_timeout``): a process that died makes the others' next collective
fail at once (gloo sees the closed connection), one that hangs makes it fail after the
timeout, never at the job's time limit."""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn


@dataclass(frozen=True)
class Runtime:
    rank: int
    world_size: int
    device: torch.device
    control: object = None  # the gloo process group of host-side agreements (distributed runs)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(gpus: int, timeout_s: float = 300, key: str = "pretrain.gpus") -> Runtime:
    """Join the process group torchrun set up (WORLD_SIZE > 1), else run alone; CUDA when
    ``gpus`` (the config ``key``) > 0 (NCCL), else CPU (gloo). Collectives wait at most
    ``timeout_s`` seconds."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if gpus > 0:
        if not torch.cuda.is_available():
            raise RuntimeError(f"{key} is {gpus} but CUDA is not available on this machine")
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if world_size == 1:
        return Runtime(rank, world_size, device)
    timeout = timedelta(seconds=timeout_s)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout)
    control = dist.new_group(backend="gloo", timeout=timeout) if device.type == "cuda" else dist.group.WORLD
    return Runtime(rank, world_size, device, control)


def gather(tensor: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    """Concatenate ``tensor`` from every process along dim 0, keeping gradients: every
    process then computes the loss of the whole global batch, so the negatives of the
    contrastive losses come from all GPUs."""
    if not runtime.distributed:
        return tensor
    # the autograd-aware gather; its replacement (_functional_collectives) is still private
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.cat(dist_fn.all_gather(tensor), dim=0)


def average(value: float, runtime: Runtime) -> float:
    if not runtime.distributed:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=runtime.device)
    dist.all_reduce(tensor)
    return float(tensor.item()) / runtime.world_size


def average_tensors(tensors: list[torch.Tensor], runtime: Runtime) -> None:
    """Replace each of ``tensors`` in place by its mean over all processes."""
    if not runtime.distributed:
        return
    for tensor in tensors:
        dist.all_reduce(tensor)
        tensor /= runtime.world_size


def agree(flags: list[int], runtime: Runtime) -> list[int]:
    """The element-wise maximum of ``flags`` over all processes (on the host, no device sync)."""
    if not runtime.distributed:
        return flags
    tensor = torch.tensor(flags, dtype=torch.int64)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=runtime.control)
    return tensor.tolist()


def gather_objects(value, runtime: Runtime) -> list | None:
    """Every process's ``value`` (picklable), in rank order, on the main process; None elsewhere."""
    if not runtime.distributed:
        return [value]
    values = [None] * runtime.world_size if runtime.is_main else None
    dist.gather_object(value, values, dst=0, group=runtime.control)
    return values


def all_gather_objects(value, runtime: Runtime) -> list:
    """Every process's ``value`` (picklable), in rank order, on every process."""
    if not runtime.distributed:
        return [value]
    values = [None] * runtime.world_size
    dist.all_gather_object(values, value, group=runtime.control)
    return values


def barrier(runtime: Runtime) -> None:
    if runtime.distributed:
        dist.barrier(group=runtime.control)


def shutdown(runtime: Runtime) -> None:
    if runtime.distributed and dist.is_initialized():
        dist.destroy_process_group()
