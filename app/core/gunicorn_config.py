"""gunicorn's hooks for `cnfs-api serve --workers N` (`--config python:app.core.gunicorn_config`): the
metrics' shared directory (PROMETHEUS_MULTIPROC_DIR) forgets a worker that exited, and is removed with the
server when `serve` made it."""

from __future__ import annotations

import os
import shutil
from typing import Any

from app.core.metrics import MULTIPROCESS_ENV

# Set by `cnfs-api serve` when it made the directory itself (no PROMETHEUS_MULTIPROC_DIR given).
MADE_BY_SERVE_ENV = "CNFS_API_METRICS_DIR_MADE"


def child_exit(_server: Any, worker: Any) -> None:
    """A worker that exited (stopped, killed, restarted) no longer adds its pool's gauges; its counters stay
    counted."""
    if os.environ.get(MULTIPROCESS_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def on_exit(_server: Any) -> None:
    directory = os.environ.get(MULTIPROCESS_ENV)
    if directory and os.environ.get(MADE_BY_SERVE_ENV) == directory:
        shutil.rmtree(directory, ignore_errors=True)
