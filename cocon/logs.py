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
def stage_logging(log_path: str | Path | None, append: bool = False):
    """Send logging, and file descriptor 2 itself, to ``log_path`` for the stage's duration;
    ``append`` keeps what earlier runs wrote (a training job's stops and resumes)."""
    if log_path is None:
        logging.basicConfig(level=logging.INFO, format=FORMAT)
        yield
        return
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a" if append else "w", buffering=1) as handle:
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
