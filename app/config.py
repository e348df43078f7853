"""Settings read from the environment (prefix-free names, documented in the README)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SQLITE_PATH = Path("data") / "cnfs.db"
DEFAULT_SECRET_KEY = "dev-only-change-me"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    database_url: str = Field(
        default=f"sqlite+aiosqlite:///./{DEFAULT_SQLITE_PATH.as_posix()}",
        description="postgresql+asyncpg://... in production; a SQLite file under ./data by default.",
    )
    database_pool_size: int = 10
    database_pool_timeout_seconds: float = 5.0
    sqlite_busy_timeout_ms: int = 5000
    database_lock_timeout_ms: int = 5000
    database_statement_timeout_ms: int = 30000
    database_connect_timeout_seconds: float = 5.0
    database_command_timeout_seconds: float = 35.0
    secret_key: str = Field(
        default=DEFAULT_SECRET_KEY,
        description="Signs pagination cursors. Set a long random value in production.",
    )
    cors_allow_origins: list[str] = Field(default_factory=list)
    max_body_bytes: int = 1024 * 1024
    idempotency_ttl_hours: int = 24
    log_level: str = "INFO"
    log_json: bool = True

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


@lru_cache
def get_settings() -> Settings:
    return Settings()
