"""Stopping a training job on the signals a cluster sends before it stops a job.

SLURM sends SIGUSR1 ahead of a time limit when asked to (``sbatch --signal=USR1@<secs>``,
profiles/slurm), and SIGTERM when it preempts, requeues or cancels a job or its time is up
(then SIGKILL after the cluster's KillWait, 30 s by default). Training answers either by
finishing the step in flight, saving a state from which the rest of the epoch runs exactly
as it would have, and exiting with a status that says which signal stopped it:

- ``REQUEUE_EXIT`` (75) after SIGUSR1: the job should go on in a new allocation. The
  launcher (``cocon.train.launch``) requeues it under SLURM; elsewhere, rerunning resumes.
- ``TERMINATED_EXIT`` (143) after SIGTERM: whoever sent it decides (SLURM requeues a
  preempted job itself when the job allows it; a cancelled job stays cancelled).

Every process of a SLURM job step receives the signal, data-loading workers included;
``ignore_stop_signals`` keeps those alive, so that the training process alone answers it.
"""
from __future__ import annotations

import logging
import multiprocessing.forkserver
import signal
import time

from cocon.train.distributed import Runtime, agree, barrier

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)
REQUEUE_EXIT = 75      # sysexits' EX_TEMPFAIL: "try again later"
TERMINATED_EXIT = 143  # 128 + SIGTERM, as shells report a process ended by SIGTERM
EXIT_STATUS = {signal.SIGUSR1: REQUEUE_EXIT, signal.SIGTERM: TERMINATED_EXIT}


class TrainingStopped(Exception):
    """Training stopped on a signal after saving its state; ``exit_status`` is the process's."""

    def __init__(self, signum: signal.Signals, message: str):
        super().__init__(message)
        self.signum = signal.Signals(signum)

    @property
    def exit_status(self) -> int:
        return EXIT_STATUS[self.signum]


def ignore_stop_signals(*_) -> None:
    """SIGUSR1 and SIGTERM ignored in this process (a DataLoader ``worker_init_fn``): a worker
    the signal killed would fail the step that the training process is finishing."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


class StopSignals:
    """While active, SIGUSR1 and SIGTERM are recorded instead of ending the process; the
    training loop asks ``received`` after each step. The first signal counts, except that
    SIGTERM overrides SIGUSR1: the job is then ending now rather than later.

    With ``loader_workers``, the multiprocessing fork server, from which the DataLoader
    workers are forked, is started on entry with both signals ignored, so that it and every
    worker forked from it stay alive when the whole job step is signalled."""

    def __init__(self, loader_workers: bool = False):
        self.received: signal.Signals | None = None
        self.loader_workers = loader_workers
        self._previous = {}

    def _record(self, signum, _frame) -> None:
        if self.received is None or signum == signal.SIGTERM:
            self.received = signal.Signals(signum)

    def __enter__(self) -> "StopSignals":
        self._previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
        if self.loader_workers:
            ignore_stop_signals()
            multiprocessing.forkserver.ensure_running()
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._record)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


class StepCheckpoints:
    """What the training loop does after each step: stop on a signal, saving the state
    first, and save it every ``minutes`` (0: never) for the kills that send no signal (a
    node failure, the OOM killer). The processes of a distributed run agree on both after
    every step, so they stop at the same step and save the same state."""

    def __init__(self, signals: StopSignals, runtime: Runtime, minutes: float, state_path):
        self.signals, self.runtime, self.minutes, self.state_path = signals, runtime, minutes, state_path
        self.last_saved = time.monotonic()

    def saved(self) -> None:
        """The loop saved the state itself (after an epoch): the next periodic save is due
        ``minutes`` from now."""
        self.last_saved = time.monotonic()

    def _agreed(self, due: bool) -> tuple[signal.Signals | None, bool]:
        codes = {None: 0, signal.SIGUSR1: 1, signal.SIGTERM: 2}
        stop, due = agree([codes[self.signals.received], int(due)], self.runtime)
        return {code: signum for signum, code in codes.items()}[stop], bool(due)

    def after_step(self, save_state, epoch: int, next_step: int, steps: int) -> None:
        """``save_state()`` saves the state with ``next_step`` steps of ``epoch`` run (every
        process calls it); raises TrainingStopped after saving on a signal."""
        due = self.minutes > 0 and time.monotonic() - self.last_saved >= self.minutes * 60
        signum, due = self._agreed(due)
        if signum is None and not due:
            return
        started = time.monotonic()
        save_state()
        self.saved()
        if signum is None:
            if self.runtime.is_main:
                log.info("step checkpoint: epoch %d, step %d of %d in %s (%.1f s)", epoch, next_step, steps,
                         self.state_path, time.monotonic() - started)
            return
        self._stop(signum, epoch, next_step, steps)

    def after_epoch(self, next_epoch: int, steps: int) -> None:
        """After the loop saved the state of a finished epoch: stop there on a signal that
        came during the epoch's end (validation, saving)."""
        signum, _ = self._agreed(False)
        if signum is not None:
            self._stop(signum, next_epoch, 0, steps)

    def _stop(self, signum: signal.Signals, epoch: int, step: int, steps: int) -> None:
        # every process waits for the main one to have written the state before any exits
        barrier(self.runtime)
        message = (f"{signum.name} received: saved the state at epoch {epoch}, step {step} of {steps} to "
                   f"{self.state_path}; exiting with status {EXIT_STATUS[signum]}")
        if self.runtime.is_main:
            log.warning(message)
        raise TrainingStopped(signum, message)
