"""A training process started by ``cocon.train.launch``: ``python -m cocon.train.worker
{pretrain,finetune} job.json``, alone, as a torchrun worker or as a SLURM task. It exits
with the stop status when training stopped on a signal (``cocon.train.preemption``)."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from pathlib import Path

from cocon.logs import FORMAT, journal
from cocon.train.launch import JOURNAL
from cocon.train.preemption import TrainingStopped


def main(kind: str, job_file: str) -> int:
    if kind == "pretrain":
        from cocon.train.pretrain import PretrainJob as Job, run_pretraining as run
    elif kind == "finetune":
        from cocon.train.finetune import FinetuneJob as Job, run_finetuning as run
    else:
        raise ValueError(f"{kind!r}: not a training kind (pretrain, finetune)")
    logging.basicConfig(level=logging.INFO, format=FORMAT)
    job = Job(**json.loads(Path(job_file).read_text()))
    # the main process's lines: the others' would repeat them
    main_process = os.environ.get("RANK", "0") == "0"
    with journal(Path(job.state_dir) / JOURNAL) if main_process else contextlib.nullcontext():
        try:
            run(job)
        except TrainingStopped as stopped:
            return stopped.exit_status
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
