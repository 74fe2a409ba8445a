"""Starting a training job: in this process, under torchrun, or as a SLURM job step.

- Alone (one process, not in a SLURM allocation): in this process.
- Several GPUs on one machine: ``torchrun --standalone`` with a process per GPU.
- In a SLURM allocation (the training rules of profiles/slurm): one job step, started by
  ``srun`` with one task per node; each task is the training process itself (one process)
  or a torchrun agent, and the agents of several nodes meet in a c10d rendezvous on the
  job's first node (its name from ``scontrol show hostnames``, a port derived from the job
  id). The same code path for one node and many: the global batch, the learning rate and
  the negatives depend on the number of processes only.

The step holds the training processes and nothing else (Snakemake runs in the job's batch
step), so that SLURM's time-limit warning (``--signal=USR1@<secs>``, sent to job steps)
and ``scancel --signal=USR1`` reach training alone. Training answers it by saving its state
and exiting with ``REQUEUE_EXIT``; the launcher then requeues the job (``scontrol requeue``),
which runs again under the same job id and resumes inside the epoch (``cocon.train.preemption``).

``python -m cocon.train.launch <torchrun arguments>`` is torchrun itself, with two changes:
its agent ignores SIGUSR1 (SLURM signals every process of the step; the agent would die of
it, and the step with it, while its workers save), and it exits with the workers' stop
status when they all stopped on a signal, or names the rank that failed first otherwise.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

from cocon.logs import journal
from cocon.train.preemption import REQUEUE_EXIT, STOP_SIGNALS, TERMINATED_EXIT, TrainingStopped

log = logging.getLogger(__name__)

STOP_EXITS = {REQUEUE_EXIT, TERMINATED_EXIT}
JOURNAL = "training.log"   # in the job's state folder: every run's lines (Snakemake empties the job's log)


def in_slurm_allocation() -> bool:
    """Inside a SLURM job but not inside one of its steps: where ``srun`` starts a new step."""
    return "SLURM_JOB_ID" in os.environ and "SLURM_STEP_ID" not in os.environ


def slurm_job(job_id: str) -> dict[str, str]:
    """``scontrol show job``'s fields (the job step's environment lacks most SLURM_ variables:
    the SLURM plugin strips them before Snakemake runs the rule)."""
    text = subprocess.run(["scontrol", "show", "job", "-o", job_id], check=True, capture_output=True,
                          text=True).stdout
    return dict(item.split("=", 1) for item in text.split() if "=" in item)


def hostnames(node_list: str) -> list[str]:
    """The host names of a SLURM node list (``gpu[01-02]``), in order."""
    return subprocess.run(["scontrol", "show", "hostnames", node_list], check=True, capture_output=True,
                          text=True).stdout.split()


def rendezvous_port(job_id: str) -> int:
    """A port of the job's own for the rendezvous, below Linux's ephemeral range (32768+)."""
    return 15000 + int(job_id) % 10000


def torchrun_arguments(nodes: int, processes: int, endpoint: str | None = None, run_id: str | None = None) -> list[str]:
    """torchrun's arguments for ``processes`` per node on ``nodes`` nodes: a c10d rendezvous
    at ``endpoint`` (host:port of the first node) when ``nodes`` > 1, else a standalone one."""
    if nodes == 1:
        return ["--standalone", f"--nproc-per-node={processes}"]
    return [f"--nnodes={nodes}", f"--nproc-per-node={processes}", "--rdzv-backend=c10d",
            f"--rdzv-endpoint={endpoint}", f"--rdzv-id={run_id}"]


def training_command(kind: str, job_file: Path, nodes: int, processes: int, endpoint: str | None = None,
                     run_id: str | None = None) -> list[str]:
    """What runs on each node: the training process itself (one), or our torchrun starting them."""
    worker = ["-m", "cocon.train.worker", kind, str(job_file)]
    if nodes == 1 and processes == 1:
        return [sys.executable, *worker]
    return [sys.executable, "-m", "cocon.train.launch", *torchrun_arguments(nodes, processes, endpoint, run_id),
            *worker]


def srun_command(job: dict[str, str], job_id: str, command_on_each_node: list[str], nodes: int, gpus: int) -> list[str]:
    """The job step: one task per node with all of the node's CPUs (and GPUs) of the job; a
    task that fails ends the others (--kill-on-bad-exit) instead of leaving them waiting."""
    command = ["srun", f"--jobid={job_id}", f"--nodes={nodes}", f"--ntasks={nodes}", "--ntasks-per-node=1",
               "--kill-on-bad-exit=1"]
    if job.get("CPUs/Task", "N/A").isdigit():
        command.append(f"--cpus-per-task={job['CPUs/Task']}")
    if gpus:
        command.append(f"--gres=gpu:{gpus}")
    return command + command_on_each_node


def launch(job, kind: str, settings: dict, run) -> None:
    """Run ``job`` (a dataclass of ``kind`` pretrain or finetune; ``run(job)`` trains it in
    this process) as ``settings`` (its section: nodes, gpus) ask. Exits with the stop status
    when training stopped on a signal, after requeueing the SLURM job on SIGUSR1. The lines
    of every run also go to the journal ``training.log`` in the job's state folder."""
    with journal(Path(job.state_dir) / JOURNAL):
        _launch(job, kind, settings, run)


def _launch(job, kind: str, settings: dict, run) -> None:
    nodes, processes = settings["nodes"], max(settings["gpus"], 1)
    slurm = in_slurm_allocation()
    if nodes > 1 and not slurm:
        raise ValueError(f"nodes is {nodes}: a multi-node job runs as a SLURM job "
                         f"(snakemake --profile profiles/slurm); here there is none (no SLURM_JOB_ID)")
    if not slurm and processes == 1:
        try:
            run(job)
        except TrainingStopped as stopped:
            raise SystemExit(stopped.exit_status) from None
        return
    job_file = Path(job.state_dir) / "job.json"
    job_file.parent.mkdir(parents=True, exist_ok=True)
    job_file.write_text(json.dumps(asdict(job)))
    if slurm:
        job_id = os.environ["SLURM_JOB_ID"]
        allocation = slurm_job(job_id)
        endpoint = f"{hostnames(allocation['NodeList'])[0]}:{rendezvous_port(job_id)}"
        command = srun_command(allocation, job_id, training_command(kind, job_file, nodes, processes, endpoint,
                                                                    f"slurm-{job_id}"), nodes, settings["gpus"])
    else:
        command = training_command(kind, job_file, nodes, processes)
    log.info("starting %s", " ".join(command))
    status = run_forwarding_signals(command)
    if status == 0:
        return
    if status not in STOP_EXITS:
        raise RuntimeError(f"training failed (exit status {status}) in {' '.join(command)}; its log is above")
    if status == REQUEUE_EXIT and slurm:
        requeue(os.environ["SLURM_JOB_ID"])
    raise SystemExit(status)


def run_forwarding_signals(command: list[str]) -> int:
    """Run ``command`` in a session of its own and pass it SIGUSR1 and SIGTERM (to its whole
    process group, as SLURM signals a whole job step): this process waits for training to
    save, rather than ending first."""
    process = subprocess.Popen(command, start_new_session=True)

    def forward(signum, _frame):
        os.killpg(process.pid, signum)

    previous = {signum: signal.signal(signum, forward) for signum in STOP_SIGNALS}
    try:
        return process.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def requeue(job_id: str) -> None:
    """Put the SLURM job back in the queue; it runs again under the same id and resumes."""
    result = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True)
    if result.returncode == 0:
        log.warning("requeued SLURM job %s: it resumes from the saved state when it runs again", job_id)
    else:
        log.error("could not requeue SLURM job %s (%s): run the same command again to resume", job_id,
                  result.stderr.strip() or f"scontrol exit status {result.returncode}")


def torchrun_main(argv: list[str]) -> int:
    """torchrun with ``argv``, its agent deaf to SIGUSR1 (see the module's docstring)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    # workers inherit the ignored signal; training installs its own handler
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    try:
        run(parse_args(argv))
    except ChildFailedError as error:
        exits = {failure.exitcode for failure in error.failures.values()}
        if exits <= STOP_EXITS:
            return TERMINATED_EXIT if TERMINATED_EXIT in exits else REQUEUE_EXIT
        rank, failure = error.get_first_failure()
        ended = f"killed by {failure.signal_name()}" if failure.exitcode < 0 else f"exit status {failure.exitcode}"
        others = sorted(set(error.failures) - {rank})
        log.error("rank %d (local rank %d, pid %d on %s) failed first: %s; the other ranks were stopped%s", rank,
                  failure.local_rank, failure.pid, os.uname().nodename, ended,
                  f" (rank {', '.join(map(str, others))} failed after it)" if others else "")
        return 1
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    sys.exit(torchrun_main(sys.argv[1:]))
