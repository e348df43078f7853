"""The private attributes of SQLAlchemy and asyncpg live in `app/core/internals.py` alone, each checked at
import: a release without one stops the service with one line, never a silent fallback."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from app.core import internals

APP = Path(__file__).resolve().parents[2] / "app"
ROOM = APP / "core" / "internals.py"

# The private names the service reaches, and the private modules: anywhere but the room, a failure.
PRIVATE_NAMES = re.compile(
    r"\._(compile_w_cache|collected_params|result_columns|bind_processors|cached_result_processor"
    r"|cached_bind_processor|process_parameters_for_postcompile|connection_record|execute_mutex"
    r"|do_return_conn|do_get|queue_class|max_overflow|overflow|invalidate_time|invalidate|pool|queue"
    r"|top_xact|protocol|connection)\b"
    r"|_collected_params\s*="
)
PRIVATE_IMPORTS = re.compile(
    r"^\s*(from|import)\s+(sqlalchemy\.util|sqlalchemy\.pool\.base|asyncpg\.\w*\._|asyncpg\.protocol)"
    r"|^\s*from\s+sqlalchemy[\w.]*\s+import\s+.*\b_[A-Za-z]",
    re.MULTILINE,
)


def test_no_private_attribute_outside_the_room() -> None:
    found = []
    for path in sorted(APP.rglob("*.py")):
        if path == ROOM:
            continue
        text = path.read_text()
        for number, line in enumerate(text.splitlines(), start=1):
            # The service's own objects may have attributes of these names.
            code = re.sub(r"\b(self|cls)\._\w+", "", line.split("#", 1)[0])
            if PRIVATE_NAMES.search(code):
                found.append(f"{path.relative_to(APP.parent)}:{number}: {line.strip()}")
        found += [
            f"{path.relative_to(APP.parent)}: {m.group(0).strip()}" for m in PRIVATE_IMPORTS.finditer(text)
        ]
    assert found == []


def test_the_room_names_the_versions_it_was_written_for() -> None:
    """The pins of pyproject.toml are the versions the room was written for, and the ones installed."""
    pins = (APP.parent / "pyproject.toml").read_text()
    for name, wanted in internals.WRITTEN_FOR.items():
        assert re.search(rf'"{name}(\[[a-z]+\])?=={re.escape(wanted)}"', pins), name
        assert version(name) == wanted, name


def test_a_missing_internal_stops_the_start_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from sqlalchemy.pool.base import _ConnectionFairy

    monkeypatch.delattr(_ConnectionFairy, "_connection_record")
    with pytest.raises(internals.MissingInternal) as raised:
        internals.check()
    message = str(raised.value)
    assert "\n" not in message
    assert "_ConnectionFairy._connection_record" in message
    assert "sqlalchemy 2.1.9 (written for 2.1.9)" in message


def test_the_check_runs_at_import() -> None:
    """A fresh interpreter where an attribute is gone: importing the application fails with the one line."""
    script = (
        "from sqlalchemy.sql.compiler import SQLCompiler\n"
        "import sqlalchemy.sql.compiler as c\n"
        "del c.SQLCompiler._process_parameters_for_postcompile\n"
        "import app.main\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=APP.parent, check=False
    )
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("app.core.internals.MissingInternal: cnfs-api cannot run on these releases"), last
