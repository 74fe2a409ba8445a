"""One process per GPU under torchrun; a plain single process otherwise."""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn


@dataclass(frozen=True)
class Runtime:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(gpus: int) -> Runtime:
    """Join the process group torchrun set up (WORLD_SIZE > 1), else run alone; CUDA when
    ``gpus`` > 0 (NCCL), else CPU (gloo)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if gpus > 0:
        if not torch.cuda.is_available():
            raise RuntimeError(f"pretrain.gpus is {gpus} but CUDA is not available on this machine")
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Runtime(rank, world_size, device)


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


def shutdown(runtime: Runtime) -> None:
    if runtime.distributed and dist.is_initialized():
        dist.destroy_process_group()
