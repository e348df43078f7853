"""Revocation and rotation seen by two `cnfs-api serve` processes on one database: each looks the key up
on every request, so the other process's change holds from the next request on."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.test_serve import ROOT, serve

GRACE_SECONDS = 3


def _create_admin_key(tmp_path: Path) -> str:
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DATABASE_")},
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'serve.db'}",
        "SECRET_KEY": "serve-test-" + "x" * 32,
    }
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "create-key", "--name", "operator"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.strip().splitlines()[-1]


def _me(url: str, secret: str) -> int:
    return httpx.get(
        f"{url}/api/v1/me", headers={"Authorization": f"Bearer {secret}"}, timeout=10
    ).status_code


def test_revocation_and_rotation_across_processes(tmp_path: Path) -> None:
    with serve(tmp_path) as first, serve(tmp_path) as second:
        admin = {"Authorization": f"Bearer {_create_admin_key(tmp_path)}"}
        created = httpx.post(
            f"{first.url}/api/v1/api-keys", json={"name": "SIRH", "role": "admin"}, headers=admin, timeout=10
        )
        assert created.status_code == 201, created.text
        key_id, old = created.json()["id"], created.json()["key"]
        assert [_me(first.url, old), _me(second.url, old)] == [200, 200]

        # Rotated through one process: both accept the old secret during its grace, and the new one.
        rotated = httpx.post(
            f"{second.url}/api/v1/api-keys/{key_id}/rotate",
            json={"grace_seconds": GRACE_SECONDS},
            headers=admin,
            timeout=10,
        )
        assert rotated.status_code == 200, rotated.text
        new = rotated.json()["key"]
        started = time.monotonic()
        statuses = [_me(server.url, secret) for server in (first, second) for secret in (old, new)]
        assert time.monotonic() - started < GRACE_SECONDS, "too slow to test the grace period"
        assert statuses == [200, 200, 200, 200]
        time.sleep(GRACE_SECONDS + 0.5 - (time.monotonic() - started))
        assert [_me(server.url, secret) for server in (first, second) for secret in (old, new)] == [
            401, 200, 401, 200
        ]  # fmt: skip

        # Revoked through one process: refused by both on the next request.
        revoked = httpx.delete(f"{first.url}/api/v1/api-keys/{key_id}", headers=admin, timeout=10)
        assert revoked.status_code == 204, revoked.text
        assert [_me(second.url, new), _me(first.url, new)] == [401, 401]

        shown = httpx.get(f"{second.url}/api/v1/api-keys/{key_id}", headers=admin, timeout=10).json()
        assert all(shown[field] for field in ("revoked_at", "rotated_at", "last_used_at")), shown
    for server in (first, second):
        text = server.log.read_text()
        assert old[5:] not in text
        assert new[5:] not in text
