"""A PgBouncer of its own, in transaction mode, in front of a PostgreSQL server, for the load benchmark
(`--pgbouncer`) and the tests: on 127.0.0.1, on a free port, stopped at the end (and at most
`LIFETIME_SECONDS` after it started, whatever happens).

PgBouncer refuses to run as root: when the tests run as root, it switches to the `postgres` user (`-u`)."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.engine import make_url

PGBOUNCER = shutil.which("pgbouncer") or next(
    (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if Path(p).is_file()), None
)
MISSING = "needs pgbouncer (apt-get install pgbouncer; .ci/run installs it)"
LIFETIME_SECONDS = 4 * 3600
START_SECONDS = 15


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run_as() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "nobody"
    return "postgres"


@contextmanager
def pgbouncer(upstream_url: str, pool_size: int = 4, query_timeout: float = 0) -> Iterator[str]:
    """Starts PgBouncer (pool_mode = transaction, auth_type = any: every client connects as the upstream
    URL's user) in front of `upstream_url`'s server, any database; yields its address (`through` makes
    URLs of it). `pool_size` server connections per database: fewer than the clients', so that clients
    share server sessions."""
    if PGBOUNCER is None:
        raise RuntimeError(MISSING)
    upstream = make_url(upstream_url)
    port = free_port()
    user = _run_as()
    with tempfile.TemporaryDirectory(prefix="cnfs-pgbouncer-") as tmp:
        folder = Path(tmp)
        ini = folder / "pgbouncer.ini"
        ini.write_text(
            "[databases]\n"
            f"* = host={upstream.host or '127.0.0.1'} port={upstream.port or 5432} "
            f"user={upstream.username or 'postgres'}"
            + (f" password={upstream.password}" if upstream.password else "")
            + "\n\n[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {port}\n"
            "unix_socket_dir =\n"
            "auth_type = any\n"
            "pool_mode = transaction\n"
            f"default_pool_size = {pool_size}\n"
            "max_client_conn = 500\n"
            f"query_timeout = {query_timeout:g}\n"
            "ignore_startup_parameters = extra_float_digits\n",
            encoding="utf-8",
        )
        log = folder / "pgbouncer.log"
        command = ["timeout", "-s", "KILL", str(LIFETIME_SECONDS), PGBOUNCER]
        if user is not None:
            shutil.chown(folder, user)
            shutil.chown(ini, user)
            command += ["-u", user]
        with log.open("wb") as out:
            process = subprocess.Popen(
                [*command, str(ini)], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        try:
            deadline = time.monotonic() + START_SECONDS
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"pgbouncer exited: {log.read_text()}")
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"pgbouncer did not listen: {log.read_text()}") from None
                    time.sleep(0.1)
            yield f"127.0.0.1:{port}"
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=5)


def through(address: str, database_url: str) -> str:
    """`database_url` (the upstream server's) through the PgBouncer listening at `address`."""
    host, port = address.rsplit(":", 1)
    return make_url(database_url).set(host=host, port=int(port)).render_as_string(hide_password=False)
