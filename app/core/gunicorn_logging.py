"""gunicorn's logger class for `cnfs-api serve --workers N`: its lines (the arbiter's: a worker booted, a
worker killed) go through the service's log formatter, JSON like every other line."""

from __future__ import annotations

from typing import Any

from gunicorn.glogging import Logger  # type: ignore[import-untyped]

from app.config import get_settings
from app.core.logging import configure_logging


class GunicornLogger(Logger):  # type: ignore[misc]
    """gunicorn's own set-up gives `gunicorn.error` a handler with its text format (and `%(process)d`);
    this one replaces it, on start and on every configuration reload (`setup` runs again then). The level
    stays gunicorn's `--log-level`; gunicorn's access log is not used (the service writes its own)."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        settings = get_settings()
        configure_logging(settings.log_level, settings.log_json)
        self.error_log.setLevel(self.loglevel)
