"""gunicorn's worker class for `cnfs-api serve --workers N`: uvicorn's worker, with a bound on its graceful
shutdown (SHUTDOWN_TIMEOUT_SECONDS)."""

from __future__ import annotations

from typing import Any

from uvicorn_worker import UvicornWorker as _UvicornWorker  # type: ignore[import-untyped]

from app.config import get_settings


class UvicornWorker(_UvicornWorker):  # type: ignore[misc]
    """uvicorn_worker hands uvicorn no `timeout_graceful_shutdown`: on SIGTERM a worker would wait for its
    requests without end, until the arbiter's `--graceful-timeout` SIGKILLs it, its requests cut, its
    application shutdown (the database pools closed) never run. With the bound, the worker cancels what
    is still running at SHUTDOWN_TIMEOUT_SECONDS (the transactions roll back), closes its pools and exits
    before the arbiter's deadline (a few seconds later, app.cli.server_command)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config.timeout_graceful_shutdown = get_settings().shutdown_timeout_seconds
