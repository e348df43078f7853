"""Settings read from the environment (prefix-free names, documented in the README)."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SQLITE_PATH = Path("data") / "cnfs.db"
DEFAULT_DATABASE_URL = f"sqlite+aiosqlite:///./{DEFAULT_SQLITE_PATH.as_posix()}"
DEFAULT_SECRET_KEY = "dev-only-change-me"
MIN_SECRET_KEY_LENGTH = 32
DATABASE_SCHEMES = ("postgresql+asyncpg://", "sqlite+aiosqlite://")

# One right value per setting, quoted by the start-up checks when a value is wrong.
EXAMPLES = {
    "database_url": "postgresql+asyncpg://cnfs:secret@db.example.fr:5432/cnfs",
    "database_pool_size": "10",
    "database_pool_timeout_seconds": "5",
    "database_connect_timeout_seconds": "5",
    "database_command_timeout_seconds": "15",
    "sqlite_busy_timeout_ms": "5000",
    "sqlite_cache_kib": "2000",
    "database_lock_timeout_ms": "5000",
    "database_statement_timeout_ms": "10000",
    "secret_key": "$(python3 -c 'import secrets; print(secrets.token_urlsafe(48))')",
    "cors_allow_origins": "'[\"https://app.example.fr\"]'",
    "public_base_url": "https://api.example.fr",
    "workshop_page_url": "https://www.example.fr/ateliers/{id}",
    "allowed_hosts": "'[\"api.example.fr\"]'",
    "forwarded_allow_ips": "10.0.0.5,192.168.0.0/16",
    "contact_name": "'Équipe cnfs-api'",
    "contact_url": "https://github.com/example/cnfs-api/issues",
    "contact_email": "cnfs-api@example.fr",
    "max_body_bytes": "1048576",
    "idempotency_ttl_hours": "24",
    "journal_retention_days": "365",
    "keep_alive_timeout_seconds": "75",
    "log_level": "INFO",
    "log_json": "true",
    "direct_path": "true",
    "rate_limits_enabled": "true",
    "rate_limit_per_key": "1200/minute",
    "rate_limit_per_address": "600/minute",
    "rate_limit_registration": "10/minute",
    "redis_url": "redis://127.0.0.1:6379/0",
    "rate_limit_redis_timeout_seconds": "0.5",
    "stats_disclosure_threshold": "11",
    "open_data_cache_seconds": "300",
    "database_pgbouncer": "true",
    "database_read_url": "postgresql+asyncpg://cnfs:secret@replica.example.fr:5432/cnfs",
    "database_read_wait_seconds": "0.5",
    "database_read_retry_seconds": "10",
    "shutdown_timeout_seconds": "20",
    "registration_retention_months": "12",
    "counsellor_retention_months": "24",
    "api_key_rotation_grace_seconds": "86400",
    "api_key_last_used_interval_seconds": "60",
    "metrics_enabled": "true",
    "metrics_token": "$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')",
    "webhooks_deliver_in_serve": "false",
    "webhook_allowed_networks": "'[\"10.20.0.0/16\"]'",
    "webhook_timeout_seconds": "10",
    "webhook_secret_grace_hours": "24",
    "webhook_retry_schedule_seconds": "'[5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400]'",
    "webhook_poll_interval_seconds": "1",
    "webhook_concurrency": "10",
    "webhook_delivery_retention_days": "30",
}

# The Standard Webhooks retry schedule: the delay before each retry after the first attempt.
DEFAULT_WEBHOOK_RETRY_SCHEDULE = [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 50400.0, 72000.0, 86400.0]


# Options of a DATABASE_URL that set server session state (asyncpg's `server_settings` and libpq's
# `options`) or keep named prepared statements: refused with DATABASE_PGBOUNCER.
SESSION_LEVEL_URL_OPTIONS = frozenset(
    {"options", "server_settings", "prepared_statement_cache_size", "statement_cache_size"}
)

# INSEE's rule for counts of persons: a count below 11 is not published.
DEFAULT_DISCLOSURE_THRESHOLD = 11


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    database_url: str = Field(
        default=DEFAULT_DATABASE_URL,
        description="postgresql+asyncpg://... in production; a SQLite file under ./data by default.",
    )
    database_pool_size: int = Field(default=10, ge=1, le=1000)
    database_pool_timeout_seconds: float = Field(default=5.0, gt=0, le=600)
    database_connect_timeout_seconds: float = Field(default=5.0, gt=0, le=600)
    database_command_timeout_seconds: float = Field(default=15.0, gt=0, le=3600)
    sqlite_busy_timeout_ms: int = Field(default=5000, ge=0, le=600_000)
    sqlite_cache_kib: int = Field(
        default=2000,
        ge=64,
        le=1_048_576,
        description="SQLite's page cache of each of the API's pooled connections, in KiB (SQLite's own "
        "default). Every connection keeps its own: up to 20 MB per worker with 10 connections. 256 spares "
        "most of it, for about a tenth of the searches' throughput (docs/performance.md). Migrations and "
        "imports keep SQLite's default.",
    )
    database_lock_timeout_ms: int = Field(default=5000, ge=0, le=3_600_000)
    database_statement_timeout_ms: int = Field(default=10000, ge=0, le=3_600_000)
    secret_key: str = Field(
        default=DEFAULT_SECRET_KEY,
        description="Signs pagination cursors. Required (32 characters or more) except on the development "
        "default SQLite database.",
    )
    cors_allow_origins: list[str] = Field(default_factory=list)
    public_base_url: str | None = Field(
        default=None, description="Absolute base of the links the API writes; relative links when unset."
    )
    workshop_page_url: str | None = Field(
        default=None,
        description="The public web page of a workshop, `{id}` standing for its id: the `URL` of its "
        "iCalendar event; the events carry no URL when unset.",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list, description="Host headers accepted (400 otherwise); any when empty."
    )
    forwarded_allow_ips: str = Field(
        default="",
        description="Addresses (or networks) of the proxies whose X-Forwarded-For and X-Forwarded-Proto "
        "are believed, comma-separated as uvicorn and gunicorn write them; none by default: the client "
        "address is the connection's.",
    )
    contact_name: str = Field(
        default="cnfs-api", min_length=1, max_length=200, description="OpenAPI `info.contact.name`."
    )
    contact_url: str | None = Field(default=None, description="OpenAPI `info.contact.url`.")
    contact_email: str | None = Field(default=None, description="OpenAPI `info.contact.email`.")
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024, le=1024**3)
    idempotency_ttl_hours: int = Field(default=24, ge=1, le=24 * 365)
    keep_alive_timeout_seconds: int = Field(default=75, ge=1, le=3600)
    log_level: str = "INFO"
    log_json: bool = True
    direct_path: bool = Field(
        default=True,
        description="false answers every request through its FastAPI route, never the direct path of the "
        "hottest reads (app/core/direct.py): the answers are the same, only slower.",
    )
    rate_limits_enabled: bool = Field(
        default=True, description="false turns every rate limit off (load tests, acceptance runs)."
    )
    rate_limit_per_key: str = Field(default="1200/minute", description="Requests per API key.")
    rate_limit_per_address: str = Field(
        default="600/minute", description="Requests without a key, per client address."
    )
    rate_limit_registration: str = Field(
        default="10/minute", description="Public registrations to workshops, per client address."
    )
    redis_url: str | None = Field(
        default=None,
        description="Rate limit counters in Redis (shared by every process); in memory when unset.",
    )
    rate_limit_redis_timeout_seconds: float = Field(
        default=0.5,
        gt=0,
        le=10,
        description="The longest a request waits for Redis to count it (connecting, sending, reading); past "
        "it, or on an error, the request goes through unchecked.",
    )
    stats_disclosure_threshold: int = Field(
        default=DEFAULT_DISCLOSURE_THRESHOLD,
        ge=1,
        le=1000,
        description="Statistical confidentiality: for callers without a key, a breakdown cell of the "
        "statistics below this (and above 0) is published as null.",
    )
    open_data_cache_seconds: float = Field(
        default=300,
        ge=0,
        le=86400,
        description="How long a worker process serves the open-data files it built (0: built for each "
        "request); the requests arriving while they are built wait for that one export.",
    )
    # Personal data retention (`cnfs-api purge`, app/personal_data/service.py, docs/personal-data.md).
    registration_retention_months: int = Field(
        default=12,
        ge=1,
        le=120,
        description="Months after a workshop ends before `cnfs-api purge` erases its registrants' names, "
        "email and phone (the registrations stay counted, anonymous).",
    )
    counsellor_retention_months: int = Field(
        default=24,
        ge=1,
        le=240,
        description="Months after a counsellor's last assignment ended (or, never assigned, after the "
        "record last changed) before `cnfs-api purge` anonymises the counsellor; never while an assignment "
        "lasts or is to come.",
    )
    # The personal-data journal (app.core.audit): its lines (`kind='read'` audit events, who saw whom) are
    # kept this long, then deleted by `cnfs-api purge` (`app.core.audit.purge_journal`); the audit trail's
    # write events are kept.
    journal_retention_days: int = Field(
        default=365,
        ge=1,
        le=3650,
        description="Days a personal-data journal line is kept (12 months by default) before the purge.",
    )

    # Deploys: how a process stops (docs/operations.md).
    shutdown_timeout_seconds: int = Field(
        default=20,
        ge=1,
        le=3600,
        description="On SIGTERM the server stops accepting connections and gives the requests in flight this "
        "long to finish (and their transactions to commit) before it cancels them, which rolls their "
        "transactions back; then it closes its database pools and exits. Keep it below the orchestrator's "
        "grace period before SIGKILL (`docker stop` waits 10 s unless given `--time`/`--stop-timeout`; "
        "Kubernetes 30 s) and above the longest request (DATABASE_STATEMENT_TIMEOUT_MS plus "
        "DATABASE_LOCK_TIMEOUT_MS).",
    )
    # API keys: rotation and usage (README, "API keys").
    api_key_rotation_grace_seconds: int = Field(
        default=86400,
        ge=0,
        le=30 * 86400,
        description="After `POST /api-keys/{id}/rotate`, how long the replaced secret stays valid when the "
        "request does not say (0: refused at once).",
    )
    api_key_last_used_interval_seconds: int = Field(
        default=60,
        ge=0,
        le=86400,
        description="`last_used_at` of a key is written when older than this, after the request, outside "
        "its transaction (0: not recorded).",
    )

    # --- PgBouncer and read replicas (docs/operations.md) ---
    database_pgbouncer: bool = Field(
        default=False,
        description="true when DATABASE_URL (and DATABASE_READ_URL) lead to PgBouncer in transaction mode: "
        "no server-side prepared statement outlives a statement, and the lock and statement timeouts are "
        "set in each transaction (SET LOCAL) instead of once per connection.",
    )
    database_read_url: str | None = Field(
        default=None,
        description="A streaming replica (PostgreSQL): the searches, lists, single reads and statistics of "
        "public and programme data read there, once it has replayed every write acknowledged before the read "
        "came; writes, personal data and the change feed stay on DATABASE_URL. Unset: everything on "
        "DATABASE_URL.",
    )
    database_read_wait_seconds: float = Field(
        default=0.5,
        ge=0,
        le=60,
        description="A read on the replica first waits until the replica has replayed what the primary had "
        "acknowledged when the read came (read-your-writes for every caller), for this long at most; a "
        "replica still behind is left alone for DATABASE_READ_RETRY_SECONDS (its reads go to DATABASE_URL).",
    )
    database_read_retry_seconds: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="A replica that cannot be reached, or is behind, is left alone this long (its reads go "
        "to DATABASE_URL), then tried again; a primary that cannot be reached is not asked its position "
        "this long (the replica answers as it stands).",
    )

    @field_validator("database_read_url")
    @classmethod
    def _replica_scheme(cls, value: str | None) -> str | None:
        if value and not value.startswith("postgresql+asyncpg://"):
            raise ValueError("must start with postgresql+asyncpg:// (a PostgreSQL streaming replica)")
        return value or None

    def pgbouncer_problem(self) -> str | None:
        """Why these settings cannot run through PgBouncer in transaction mode (one line), or None."""
        if not self.database_pgbouncer or self.is_sqlite:
            # SQLite: the setting has no effect.
            return None
        from sqlalchemy.engine import make_url

        for name, url in (("DATABASE_URL", self.database_url), ("DATABASE_READ_URL", self.database_read_url)):
            if url is None:
                continue
            session_level = sorted(set(make_url(url).query) & SESSION_LEVEL_URL_OPTIONS)
            if session_level:
                return (
                    f"{name} sets {', '.join(session_level)}, which lasts a whole server session: under "
                    "PgBouncer's transaction pooling the next client would inherit it; remove it "
                    "(timeouts: DATABASE_LOCK_TIMEOUT_MS, DATABASE_STATEMENT_TIMEOUT_MS)"
                )
        return None

    def replica_problem(self) -> str | None:
        if self.database_read_url and self.is_sqlite:
            return "DATABASE_READ_URL needs a PostgreSQL DATABASE_URL (a replica of it)"
        return None

    # Observability: GET /metrics (Prometheus). Off, it answers 404; with a token, only a scraper that sends
    # it (`Authorization: Bearer <token>`) reads it, so that the public port need not be filtered.
    metrics_enabled: bool = Field(default=True, description="Whether GET /metrics answers (404 when off).")
    metrics_token: str | None = Field(
        default=None,
        min_length=16,
        description="When set, GET /metrics needs `Authorization: Bearer <token>` (401 otherwise).",
    )

    # --- webhooks (app/webhooks) -------------------------------------------------------------------------
    webhooks_deliver_in_serve: bool = Field(
        default=False,
        description="Each `serve` worker process also runs the webhook delivery worker (several may run: "
        "each delivery is sent by one of them); otherwise run `cnfs-api webhooks deliver` beside it.",
    )
    webhook_allowed_networks: list[str] = Field(
        default_factory=list,
        description="Networks webhooks may be sent to beyond public addresses (loopback, private and "
        'link-local addresses are refused otherwise: SSRF), e.g. ["10.20.0.0/16"]; tests allow loopback.',
    )
    webhook_timeout_seconds: float = Field(
        default=10.0, gt=0, le=120, description="The longest wait for a receiver's answer to one delivery."
    )
    webhook_secret_grace_hours: float = Field(
        default=24.0,
        ge=0,
        le=24 * 30,
        description="After a secret's rotation, how long deliveries are signed with the old secret too.",
    )
    webhook_retry_schedule_seconds: list[float] = Field(
        default_factory=lambda: list(DEFAULT_WEBHOOK_RETRY_SCHEDULE),
        min_length=1,
        max_length=50,
        description="The delay before each retry of a failed delivery (jittered by up to 10 %); after the "
        "last, the delivery is `failed`. The Standard Webhooks schedule by default.",
    )
    webhook_poll_interval_seconds: float = Field(
        default=1.0, gt=0, le=60, description="How often an idle delivery worker looks for work."
    )
    webhook_concurrency: int = Field(
        default=10, ge=1, le=200, description="Deliveries one worker sends at once (to different objects)."
    )
    webhook_delivery_retention_days: int = Field(
        default=30,
        ge=1,
        le=3650,
        description="Deliveries succeeded or failed this long ago are deleted by the worker (pending ones "
        "are kept).",
    )

    @field_validator("webhook_allowed_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP network, e.g. 10.20.0.0/16") from None
        return value

    @field_validator("webhook_retry_schedule_seconds")
    @classmethod
    def _schedule(cls, value: list[float]) -> list[float]:
        if any(delay < 0 or delay > 7 * 86400 for delay in value):
            raise ValueError("each delay must be from 0 to 604800 seconds")
        return value

    @field_validator("database_url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if not value.startswith(DATABASE_SCHEMES):
            raise ValueError(f"must start with {' or '.join(DATABASE_SCHEMES)}")
        return value

    @field_validator("public_base_url")
    @classmethod
    def _absolute_http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("must be an absolute http(s) URL")
        return value.rstrip("/") if value else value

    @field_validator("workshop_page_url")
    @classmethod
    def _page_template(cls, value: str | None) -> str | None:
        if value is not None and not (value.startswith(("https://", "http://")) and "{id}" in value):
            raise ValueError("must be an absolute http(s) URL with {id} where the workshop's id goes")
        return value

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _addresses(cls, value: str) -> str:
        items = [item.strip() for item in value.split(",") if item.strip()]
        for item in items:
            if item == "*":
                continue
            try:
                ipaddress.ip_network(item)
            except ValueError:
                raise ValueError(
                    f"{item!r} is not an IP address or network: give addresses or networks separated by "
                    "commas, or * for any"
                ) from None
        return ",".join(items)

    @field_validator("contact_url")
    @classmethod
    def _contact_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("must be an absolute http(s) URL")
        return value or None

    @field_validator("contact_email")
    @classmethod
    def _contact_email(cls, value: str | None) -> str | None:
        if value and (value.count("@") != 1 or any(c.isspace() for c in value) or value.startswith("@")):
            raise ValueError("must be an email address")
        return value or None

    @property
    def trusted_proxies(self) -> list[str]:
        return [item for item in self.forwarded_allow_ips.split(",") if item]

    @field_validator("rate_limit_per_key", "rate_limit_per_address", "rate_limit_registration")
    @classmethod
    def _limit(cls, value: str) -> str:
        from app.core.ratelimit import parse_limit

        try:
            parse_limit(value)
        except ValueError:
            raise ValueError("must be a number of requests per period, e.g. 600/minute") from None
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value or None

    @field_validator("metrics_token", mode="before")
    @classmethod
    def _no_empty_token(cls, value: object) -> object:
        return value or None

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        if value.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ValueError("must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
        return value.upper()

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def is_development_default(self) -> bool:
        """The embedded SQLite file of a development machine: the only place the public default secret may
        sign cursors."""
        return self.database_url == DEFAULT_DATABASE_URL

    def secret_key_problem(self) -> str | None:
        """Why SECRET_KEY is not good enough for this deployment, or None."""
        if self.is_development_default:
            return None
        if self.secret_key == DEFAULT_SECRET_KEY:
            return "is not set (its public development default only serves the default SQLite database)"
        if len(self.secret_key) < MIN_SECRET_KEY_LENGTH:
            return f"is too short: {MIN_SECRET_KEY_LENGTH} characters or more"
        return None


@lru_cache
def get_settings() -> Settings:
    return Settings()
