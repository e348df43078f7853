#!/usr/bin/env python3
"""Bootstrap for a machine with only Python 3.11+: installs the locked dependencies into .venv, then runs.

python3 dev.py serve    # install, migrate, load demo data, serve on http://127.0.0.1:8000 (Swagger: /docs);
                        # extra arguments go to `cnfs-api serve`, e.g. --port 8080
python3 dev.py test     # install, then run the whole test suite (extra arguments go to pytest)
python3 dev.py lint     # ruff + mypy
python3 dev.py lock     # re-resolve requirements*.lock from pyproject.toml
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")


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
        _run(PYTHON, "-m", "pytest", *rest)
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
