"""Proves a backup restores: dumps a PostgreSQL database (`pg_dump -Fc`), restores the dump into a new
database (`pg_restore`) and compares the row count of every table (the migration revision's included) with
the source's.

    .venv/bin/python scripts/backup_restore_check.py postgresql://postgres@127.0.0.1:5432/cnfs
    .venv/bin/python scripts/backup_restore_check.py "$DATABASE_URL" --dump /backups/cnfs.dump --keep

The source may be in use: its rows are counted in the very snapshot that pg_dump dumps (`pg_export_snapshot`,
`pg_dump --snapshot`), so writes during the check do not make it fail. The restored database
(`<source>_restore_check_<random>`, on the same server) is dropped at the end unless `--keep`; the dump is
written to a temporary file unless `--dump`. The role needs CREATEDB. Exit status 0 when every count is
equal, 1 when one differs, 2 when a step fails (its error is printed). pg_dump and pg_restore must be at
least the server's major version."""

from __future__ import annotations

import argparse
import asyncio
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

Counts = dict[str, int]


def libpq_url(url: str) -> str:
    """A libpq URL (what pg_dump, pg_restore and asyncpg take) from DATABASE_URL's SQLAlchemy form."""
    scheme, rest = url.split("://", 1)
    if not scheme.startswith(("postgresql", "postgres")):
        raise SystemExit(f"not a PostgreSQL URL: {scheme}://...")
    return f"postgresql://{rest}"


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def database_name(url: str) -> str:
    name = urlsplit(url).path.lstrip("/")
    if not name:
        raise SystemExit("the URL names no database")
    return name


async def table_counts(connection: asyncpg.Connection) -> Counts:
    """Every ordinary table of the database's own schemas, with its number of rows."""
    tables = await connection.fetch(
        "SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) AS name FROM pg_tables "
        "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1"
    )
    return {
        row["name"]: int(await connection.fetchval(f"SELECT count(*) FROM {row['name']}")) for row in tables
    }


def differences(source: Counts, restored: Counts) -> list[str]:
    """What differs between the source's counts and the restored database's, one line each."""
    lines = []
    for table in sorted(source.keys() | restored.keys()):
        if table not in restored:
            lines.append(f"{table}: missing from the restored database ({source[table]} rows in the source)")
        elif table not in source:
            lines.append(f"{table}: only in the restored database ({restored[table]} rows)")
        elif source[table] != restored[table]:
            lines.append(f"{table}: {source[table]} rows in the source, {restored[table]} restored")
    return lines


def _run(*command: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{command[0]} failed (exit status {result.returncode}): {result.stderr.strip()}")


async def dump(url: str, path: Path) -> Counts:
    """Dumps the database into `path` and returns its counts, both of one snapshot."""
    connection = await asyncpg.connect(url)
    try:
        async with connection.transaction(isolation="repeatable_read", readonly=True):
            snapshot = await connection.fetchval("SELECT pg_export_snapshot()")
            counts = await table_counts(connection)
            # The snapshot stays valid while this transaction is open: pg_dump reads the same one.
            await asyncio.to_thread(
                _run, "pg_dump", "--format=custom", f"--snapshot={snapshot}", f"--file={path}", url
            )
        return counts
    finally:
        await connection.close()


async def restore(path: Path, url: str, name: str) -> Counts:
    """Restores the dump into a new database `name` on the same server and returns its counts."""
    admin = await asyncpg.connect(url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    target = with_database(url, name)
    await asyncio.to_thread(
        _run,
        "pg_restore",
        "--exit-on-error",
        "--single-transaction",
        "--no-owner",
        "--no-privileges",
        f"--dbname={target}",
        str(path),
    )
    connection = await asyncpg.connect(target)
    try:
        return await table_counts(connection)
    finally:
        await connection.close()


async def drop(url: str, name: str) -> None:
    admin = await asyncpg.connect(url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def check(url: str, dump_path: Path | None, keep: bool) -> int:
    source_name = database_name(url)
    name = f"{source_name}_restore_check_{secrets.token_hex(4)}"[:63]
    with tempfile.TemporaryDirectory(prefix="cnfs-backup-") as tmp:
        path = dump_path or Path(tmp) / f"{source_name}.dump"
        try:
            source = await dump(url, path)
            print(f"dumped {source_name} into {path} ({path.stat().st_size} bytes)")
            restored = await restore(path, url, name)
        except (RuntimeError, OSError, asyncpg.PostgresError) as exc:
            print(f"backup check failed: {exc}", file=sys.stderr)
            await drop(url, name)
            return 2
        try:
            width = max((len(table) for table in source), default=5)
            print(f"{'table':<{width}}  {'source':>10}  {'restored':>10}")
            for table in sorted(source.keys() | restored.keys()):
                print(f"{table:<{width}}  {source.get(table, '-'):>10}  {restored.get(table, '-'):>10}")
            problems = differences(source, restored)
            for line in problems:
                print(f"DIFFERS {line}", file=sys.stderr)
            if not problems:
                print(f"restored into {name}: {len(source)} tables, {sum(source.values())} rows, all equal")
            return 1 if problems else 0
        finally:
            if keep:
                print(f"kept the restored database {name}")
            else:
                await drop(url, name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the database to check (DATABASE_URL's form is accepted)")
    parser.add_argument(
        "--dump", type=Path, help="write the dump here (kept) rather than to a temporary file"
    )
    parser.add_argument("--keep", action="store_true", help="keep the restored database")
    args = parser.parse_args(argv)
    return asyncio.run(check(libpq_url(args.url), args.dump, args.keep))


if __name__ == "__main__":
    sys.exit(main())
