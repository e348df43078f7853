"""Checks run by every `cnfs-api` command before it touches the database (`serve` and `migrate` before
anything is migrated or served).

A wrong setting, an unreachable or missing database, a database whose schema is not the one this release
needs (commands other than `migrate` and `serve`, which migrate it), or a busy port is reported as one line
that says what is wrong, which variable or command, and an example of a right value; the command exits with
status 2, no traceback, and leaves nothing behind (no empty SQLite file)."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import sqlite3
from collections.abc import Collection
from contextlib import closing
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_settings import SettingsError
from sqlalchemy.engine import make_url

from app.config import EXAMPLES, Settings, get_settings

EXIT_CODE = 2


class StartupError(Exception):
    """One line for the operator."""


def _example(field: str) -> str:
    example = EXAMPLES.get(field)
    return f" (example: {field.upper()}={example})" if example else ""


def load_settings(require_secret: bool = True) -> Settings:
    """The settings, or a StartupError naming the first wrong variable (SECRET_KEY only for commands that
    sign cursors: `serve`, and `migrate`, which comes before it)."""
    try:
        settings = get_settings()
    except SettingsError as exc:
        # pydantic-settings could not decode a value (a list that is not JSON): its message names the field.
        field = str(exc).split('"')[1] if '"' in str(exc) else "?"
        raise StartupError(f"{field.upper()} is not valid JSON: give a JSON list{_example(field)}") from None
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else "?"
        message = str(error["msg"]).removeprefix("Value error, ")
        raise StartupError(f"{field.upper()} is wrong: {message}{_example(field)}") from None
    problem = settings.secret_key_problem() if require_secret else None
    if problem:
        raise StartupError(f"SECRET_KEY {problem}{_example('secret_key')}")
    database_problem = settings.pgbouncer_problem() or settings.replica_problem()
    if database_problem:
        raise StartupError(database_problem)
    return settings


def _where(settings: Settings) -> str:
    url = make_url(settings.database_url)
    return f"{url.host or 'localhost'}:{url.port or 5432}"


# What SQLAlchemy's dialect reads from a URL's query for the engine but asyncpg.connect does not take.
_ENGINE_ONLY = ("prepared_statement_cache_size", "prepared_statement_name_func")


async def _connect(settings: Settings, database_url: str) -> Any:
    """One asyncpg connection for the start-up checks, to where the engine's go: the URL read by
    SQLAlchemy's asyncpg dialect (its query's `host` for a Unix socket, `port`, `ssl`, ...)."""
    import asyncpg
    from sqlalchemy.dialects.postgresql.asyncpg import dialect

    _args, options = dialect().create_connect_args(make_url(database_url))  # type: ignore[no-untyped-call]
    for name in _ENGINE_ONLY:
        options.pop(name, None)
    options.update(
        timeout=settings.database_connect_timeout_seconds,
        # Unnamed statements only: none left on a server session that a pooler (PgBouncer in transaction
        # mode) hands to another client next, whatever DATABASE_PGBOUNCER says.
        statement_cache_size=0,
    )
    return await asyncpg.connect(**options)


async def _close(connection: Any) -> None:
    """Closed, or dropped when the server or the pooler broke it off."""
    try:
        await connection.close(timeout=5)
    except Exception:  # a broken connection: nothing is left to close cleanly
        connection.terminate()


async def _probe_postgres(settings: Settings, read_revision: bool = False) -> list[str]:
    """Connects (one line on failure); with `read_revision`, the database's migration revisions (none when
    it was never migrated)."""
    import asyncpg

    url = make_url(settings.database_url)
    timeout = settings.database_connect_timeout_seconds
    try:
        connection = await _connect(settings, settings.database_url)
    except asyncpg.InvalidCatalogNameError:
        raise StartupError(
            f'DATABASE_URL names a database "{url.database}" that does not exist on {_where(settings)}: '
            f"create it (createdb -h {url.host} -U {url.username or 'postgres'} {url.database})"
        ) from None
    except (asyncpg.InvalidAuthorizationSpecificationError, asyncpg.InvalidPasswordError):
        raise StartupError(
            f'DATABASE_URL: {_where(settings)} refused the user "{url.username}" (wrong user or password)'
            f"{_example('database_url')}"
        ) from None
    except TimeoutError:
        raise StartupError(
            f"DATABASE_URL: {_where(settings)} did not answer within {timeout:g} s "
            "(DATABASE_CONNECT_TIMEOUT_SECONDS); is it a PostgreSQL server?"
        ) from None
    except (OSError, asyncpg.PostgresError) as exc:
        reason = (
            os.strerror(exc.errno).lower() if isinstance(exc, OSError) and exc.errno else type(exc).__name__
        )
        raise StartupError(
            f"DATABASE_URL: cannot reach PostgreSQL at {_where(settings)} ({reason})"
        ) from None
    try:
        if not settings.database_pgbouncer:
            await _refuse_a_pooler(connection, seconds=timeout)
            if settings.database_read_url:
                await _probe_replica(settings, settings.database_read_url)
        if not read_revision:
            return []
        try:
            rows = await connection.fetch("SELECT version_num FROM alembic_version", timeout=timeout)
        except asyncpg.UndefinedTableError:
            return []
        return [str(row[0]) for row in rows]
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise StartupError(
            f"DATABASE_URL: {_where(settings)} accepted the connection, then failed its first query "
            f"({type(exc).__name__}); is it the PostgreSQL database itself?"
        ) from None
    finally:
        await _close(connection)


POOLER_LINE = (
    "{variable} leads to a pooler or proxy that gives connections process ids of its own (PgBouncer, a "
    "cloud provider's proxy), not to PostgreSQL itself (given {given}, the server's is {server}): set "
    "DATABASE_PGBOUNCER=true, without which the driver's prepared statements and the timeouts sent at "
    "connect would meet server sessions that other clients may share (docs/operations.md, PgBouncer)"
)


async def _refuse_a_pooler(connection: Any, variable: str = "DATABASE_URL", *, seconds: float) -> None:
    """PostgreSQL gives each connection its server process's id (BackendKeyData, for cancel requests); a
    pooler (PgBouncer, in every mode) or a proxy that routes cancel requests itself gives ids of its own.
    Without DATABASE_PGBOUNCER such a URL is refused: behind a pooler in transaction mode, a named
    statement prepared on one server session would be run, by name, on another, where the same name may
    be another client's statement. DATABASE_PGBOUNCER=true is right behind any of them (behind a proxy
    that keeps one server session per connection, it costs a little speed and nothing else). A pooler
    that passes the server's ids on is not seen."""
    server = await connection.fetchval("SELECT pg_backend_pid()", timeout=seconds)
    given = connection.get_server_pid()
    if server != given:
        raise StartupError(POOLER_LINE.format(variable=variable, given=given, server=server))


def _probe_sqlite(settings: Settings) -> None:
    database = make_url(settings.database_url).database or ""
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    folder = Path(database).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StartupError(
            f"DATABASE_URL: cannot create the folder {folder} of the SQLite database ({exc.strerror})"
            f"{_example('database_url')}"
        ) from None


def _sqlite_path(settings: Settings) -> Path | None:
    """The SQLite database's file; None for a database in memory."""
    database = make_url(settings.database_url).database or ""
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def _sqlite_revision(path: Path) -> list[str]:
    """The revisions of an existing SQLite file (opened as it is: nothing is created)."""
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True)) as connection:
            try:
                rows = connection.execute("SELECT version_num FROM alembic_version").fetchall()
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):
                    return []
                raise
    except sqlite3.DatabaseError as exc:
        raise StartupError(
            f"DATABASE_URL: cannot read the SQLite database {path} ({exc}){_example('database_url')}"
        ) from None
    return [str(row[0]) for row in rows]


def _schema(settings: Settings) -> tuple[str, list[str] | None]:
    """Where the database is (for the messages) and its migration revisions; None for a SQLite file that
    does not exist (nothing is created to find out)."""
    if settings.is_sqlite:
        path = _sqlite_path(settings)
        if path is None:
            return ":memory:", None
        return str(path), _sqlite_revision(path) if path.is_file() else None
    url = make_url(settings.database_url)
    revisions = asyncio.run(_probe_postgres(settings, read_revision=True))
    return f'"{url.database}" on {_where(settings)}', revisions


def _newer(where: str, revisions: list[str], known: Collection[str]) -> StartupError | None:
    if set(revisions) <= set(known):
        return None
    return StartupError(
        f"the database {where} is at migration {', '.join(revisions)}, which this release does not know "
        "(a newer release migrated it): run the newer release"
    )


def check_schema(settings: Settings, head: str, known: Collection[str]) -> None:
    """The database exists, answers and its schema is at `head` (the latest migration of this release):
    for the commands that read or write it without migrating it first."""
    if settings.is_sqlite and _sqlite_path(settings) is None:
        return
    where, revisions = _schema(settings)
    if revisions is None:
        raise StartupError(
            f"DATABASE_URL: the SQLite database {where} does not exist yet: create it with `cnfs-api migrate`"
        )
    if revisions == [head]:
        return
    if not revisions:
        raise StartupError(f"the database {where} is not migrated: run `cnfs-api migrate` first")
    newer = _newer(where, revisions, known)
    if newer is not None:
        raise newer
    raise StartupError(
        f"the database {where} is at migration {', '.join(revisions)}, this release needs {head}: "
        "run `cnfs-api migrate` first"
    )


def check_not_newer(settings: Settings, known: Collection[str]) -> None:
    """Before migrating: a database that a newer release migrated is left alone, in one line."""
    if settings.is_sqlite and _sqlite_path(settings) is None:
        return
    where, revisions = _schema(settings)
    newer = _newer(where, revisions or [], known)
    if newer is not None:
        raise newer


def check_database(settings: Settings, create: bool = True) -> None:
    """The database answers and exists (PostgreSQL), or its folder can be made (SQLite; with `create`
    false, its file must exist)."""
    if settings.is_sqlite:
        path = _sqlite_path(settings)
        if not create and path is not None and not path.is_file():
            raise StartupError(f"DATABASE_URL: the SQLite database {path} does not exist")
        _probe_sqlite(settings)
    else:
        asyncio.run(_probe_postgres(settings))


async def _probe_replica(settings: Settings, read_url: str) -> None:
    """DATABASE_READ_URL, when it answers, is not a pooler (without DATABASE_PGBOUNCER). A replica that does
    not answer, or fails its query, is no reason not to start: its reads go to DATABASE_URL until it
    answers (app.core.replica)."""
    timeout = settings.database_connect_timeout_seconds
    try:
        connection = await _connect(settings, read_url)
    except Exception:  # whatever keeps it from answering, it is looked at no further
        return
    try:
        await _refuse_a_pooler(connection, "DATABASE_READ_URL", seconds=timeout)
    except StartupError:
        raise
    except Exception:  # a replica that answers but fails the query: left for later, as one that does not
        return
    finally:
        await _close(connection)


def check_port(host: str, port: int) -> None:
    """The port is free (bound and released at once, with the options uvicorn itself uses)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise StartupError(
                    f"port {port} on {host} is already in use: stop what listens there or choose another "
                    f"(example: --port {port + 80 if port < 65000 else 8080})"
                ) from None
            raise StartupError(
                f"cannot listen on {host}:{port} ({exc.strerror}) (example: --host 127.0.0.1)"
            ) from None
