"""Checks run by `cnfs-api serve` and `migrate` before anything is migrated or served.

A wrong setting, an unreachable or missing database, or a busy port is reported as one line that says what
is wrong, which variable, and an example of a right value; the command exits with status 2, no traceback."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from pathlib import Path

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
    return settings


def _where(settings: Settings) -> str:
    url = make_url(settings.database_url)
    return f"{url.host or 'localhost'}:{url.port or 5432}"


async def _probe_postgres(settings: Settings) -> None:
    import asyncpg

    url = make_url(settings.database_url)
    timeout = settings.database_connect_timeout_seconds
    try:
        connection = await asyncpg.connect(
            host=url.host,
            port=url.port or 5432,
            user=url.username,
            password=url.password,
            database=url.database,
            timeout=timeout,
        )
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
    await connection.close()


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


def check_database(settings: Settings) -> None:
    """The database answers and exists (PostgreSQL), or its folder can be made (SQLite)."""
    if settings.is_sqlite:
        _probe_sqlite(settings)
    else:
        asyncio.run(_probe_postgres(settings))


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
