"""Logging for stages: one log file per job, which also catches tqdm and warnings."""
from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path


@contextlib.contextmanager
def stage_logging(log_path: str | Path | None):
    """Send logging, stderr (tqdm) and uncaught errors of a stage to ``log_path``."""
    if log_path is None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
        yield
        return
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", buffering=1) as handle, contextlib.redirect_stderr(handle):
        handler = logging.StreamHandler(handle)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        logging.captureWarnings(True)
        try:
            yield
        except BaseException:
            logging.getLogger("cocon").exception("stage failed")
            raise
        finally:
            root.removeHandler(handler)
            sys.stderr.flush()
