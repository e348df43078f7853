#!/usr/bin/env python3
"""Bootstrap for a machine with only Python 3.11+: installs the locked dependencies into .venv, then runs.

python3 dev.py serve    # install, migrate, load demo data, serve on http://127.0.0.1:8000 (Swagger: /docs);
                        # extra arguments go to `cnfs-api serve`, e.g. --port 8080
python3 dev.py test     # install, then run the whole test suite on SQLite, and again on PostgreSQL when a
                        # server answers (TEST_DATABASE_URL, else 127.0.0.1:5432); extra arguments go to
                        # pytest; --sqlite or --postgres first runs only one of them
python3 dev.py lint     # ruff + mypy
python3 dev.py lock     # re-resolve requirements*.lock from pyproject.toml
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import venv
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")


DEFAULT_TEST_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"


def _postgres_answers(url: str) -> bool:
    where = urlsplit(url)
    try:
        with socket.create_connection((where.hostname or "127.0.0.1", where.port or 5432), timeout=2):
            return True
    except OSError:
        return False


def test(args: list[str]) -> None:
    """SQLite, then PostgreSQL: the race and lock tests only mean something on PostgreSQL."""
    only = args[0] if args and args[0] in ("--sqlite", "--postgres") else None
    rest = args[1:] if only else args
    # Two processes (pytest-xdist), each with its own database, unless told otherwise (`-n 0`, `-n 4`).
    if not any(a == "-n" or a.startswith(("-n", "--numprocesses")) for a in rest):
        rest = ["-n", "2", *rest]
    url = os.environ.get("TEST_DATABASE_URL") or DEFAULT_TEST_DATABASE_URL
    server = f"{urlsplit(url).hostname}:{urlsplit(url).port or 5432}"
    results: dict[str, str] = {}
    failed = False
    if only != "--postgres":
        print("== tests on SQLite", flush=True)
        env = {k: v for k, v in os.environ.items() if k != "TEST_DATABASE_URL"}
        code = subprocess.run([str(PYTHON), "-m", "pytest", *rest], cwd=ROOT, env=env).returncode
        results["SQLite"] = "passed" if code == 0 else f"FAILED (pytest exit status {code})"
        failed |= code != 0
    if only != "--sqlite":
        if _postgres_answers(url):
            print(f"== tests on PostgreSQL ({server})", flush=True)
            env = {**os.environ, "TEST_DATABASE_URL": url}
            code = subprocess.run([str(PYTHON), "-m", "pytest", *rest], cwd=ROOT, env=env).returncode
            results["PostgreSQL"] = "passed" if code == 0 else f"FAILED (pytest exit status {code})"
            failed |= code != 0
        else:
            results["PostgreSQL"] = (
                f"NOT RUN: no server answers at {server} "
                "(start one, or set TEST_DATABASE_URL); the race and lock tests were skipped"
            )
            # CI must prove the locks: a missing server is a failure there, a notice on a laptop.
            failed |= os.environ.get("CI") == "true" or only == "--postgres"
    for database, outcome in results.items():
        print(f"== {database}: {outcome}", flush=True)
    if failed:
        sys.exit(1)


def _run(*args: str | Path, env: dict[str, str] | None = None) -> None:
    result = subprocess.run([str(a) for a in args], cwd=ROOT, env=env)
    if result.returncode != 0:
        sys.exit(result.returncode)


def ensure_venv(dev: bool) -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - this script may be started by an older python3
        sys.exit("cnfs-api needs Python 3.11 or newer")
    lock = ROOT / ("requirements-dev.lock" if dev else "requirements.lock")
    stamp_text = hashlib.sha256(lock.read_bytes() + (ROOT / "pyproject.toml").read_bytes()).hexdigest()
    stamp = VENV / f".installed-{'dev' if dev else 'run'}"
    if stamp.exists() and stamp.read_text() == stamp_text and PYTHON.exists():
        return
    if not PYTHON.exists():
        print("creating .venv ...", flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    print(f"installing {lock.name} ...", flush=True)
    _run(PYTHON, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r", lock)
    _run(PYTHON, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps", "-e", ".")
    stamp.write_text(stamp_text)


def main(argv: list[str]) -> None:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(__doc__)
        return
    command, rest = argv[0], argv[1:]
    if command == "serve":
        ensure_venv(dev=False)
        _run(BIN / "cnfs-api", "serve", *rest)
    elif command == "test":
        ensure_venv(dev=True)
        test(rest)
    elif command == "lint":
        ensure_venv(dev=True)
        _run(PYTHON, "-m", "ruff", "check", ".")
        _run(PYTHON, "-m", "ruff", "format", "--check", ".")
        _run(PYTHON, "-m", "mypy")
    elif command == "lock":
        ensure_venv(dev=True)
        _run(PYTHON, "-m", "pip", "install", "--quiet", "uv==0.13.8")
        common = ["pyproject.toml", "--python-version", "3.11", "--quiet"]
        _run(PYTHON, "-m", "uv", "pip", "compile", *common, "-o", "requirements.lock")
        _run(PYTHON, "-m", "uv", "pip", "compile", *common, "--extra", "dev", "-o", "requirements-dev.lock")
    else:
        sys.exit(f"unknown command {command!r}; see: python3 dev.py help")


if __name__ == "__main__":
    main(sys.argv[1:])
