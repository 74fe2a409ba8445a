"""Process pools that are safe to start from a process that already runs threads."""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor


def process_pool(workers: int) -> ProcessPoolExecutor:
    """A pool whose workers come from a fresh forkserver, never a fork of this process:
    forking a process in which MediaPipe, OpenCV or torch threads hold a lock leaves the
    child waiting on that lock forever."""
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver"))
