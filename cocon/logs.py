"""Logging for stages: one log file per job, which also catches tqdm, warnings, and what
native libraries (MediaPipe, OpenCV) write to the process's stderr."""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path

FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


@contextlib.contextmanager
def stage_logging(log_path: str | Path | None):
    """Send logging, and file descriptor 2 itself, to ``log_path`` for the stage's duration."""
    if log_path is None:
        logging.basicConfig(level=logging.INFO, format=FORMAT)
        yield
        return
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", buffering=1) as handle:
        sys.stderr.flush()
        saved_stderr = os.dup(2)
        os.dup2(handle.fileno(), 2)
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        logging.captureWarnings(True)
        try:
            yield
        except SystemExit:
            raise  # a planned exit (a training job stopped on a signal) has logged why
        except BaseException:
            logging.getLogger("cocon").exception("stage failed")
            raise
        finally:
            root.removeHandler(handler)
            sys.stderr.flush()
            os.dup2(saved_stderr, 2)
            os.close(saved_stderr)


@contextlib.contextmanager
def journal(path: str | Path):
    """Also append this process's ``cocon`` log records to ``path`` while active. Snakemake
    empties a job's log each time the job runs; a training job's journal in its state folder
    keeps every run's lines: each stop on a signal, each resume, each epoch."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="a")
    handler.setFormatter(logging.Formatter(FORMAT))
    logger = logging.getLogger("cocon")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        handler.close()
