"""A process of the distributed tests, started by torchrun (``cocon.train.launch``'s command):
``python -m tests.distributed_worker ROOT OUT`` joins the process group through
``cocon.train.distributed.setup``, as training does, and saves its loss, gradients and
validation metrics on its half of the test batch to OUT/rank<R>.pt."""
import sys
from pathlib import Path

import torch

from cocon.train.distributed import setup, shutdown
from tests.test_pretrain import distributed_results


def main(root: str, out: str) -> None:
    runtime = setup(0, timeout_s=60)
    torch.save(distributed_results(Path(root), runtime), Path(out) / f"rank{runtime.rank}.pt")
    shutdown(runtime)


if __name__ == "__main__":
    main(*sys.argv[1:])
