"""The `cnfs-api` command: serve, migrate, seed-demo, create-key, territories import, stats rebuild,
open-data export, webhooks deliver."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from app.config import Settings
from app.core.logging import configure_logging
from app.core.problems import AppError
from app.startup import (
    EXIT_CODE,
    StartupError,
    check_database,
    check_not_newer,
    check_port,
    check_schema,
    load_settings,
)

if TYPE_CHECKING:
    from app.opendata import service as service_types
    from app.territories.service import ImportReport

cli = typer.Typer(help="cnfs-api: the Conseillers numériques France Services backend.", no_args_is_help=True)
console = Console()
ROOT = Path(__file__).resolve().parents[1]


def alembic_config(database_url: str) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.attributes["database_url"] = database_url
    # The caller's logging stands (the service's JSON lines), rather than alembic.ini's.
    config.attributes["configure_logger"] = False
    return config


def _revisions() -> tuple[str, set[str]]:
    """The latest migration of this release and every migration it knows."""
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    return str(script.get_current_head()), {revision.revision for revision in script.walk_revisions()}


def _ensure_sqlite_dir(settings: Settings) -> None:
    if settings.is_sqlite and ":memory:" not in settings.database_url:
        path = settings.database_url.split("///", 1)[-1]
        Path(path).parent.mkdir(parents=True, exist_ok=True)


# `serve` writes its refusals as JSON log lines when LOG_JSON is on (its default), as the running service
# writes every line: a log collector reads the reason a container did not start like any other line.
_json_refusals = False


def _refuse(message: str) -> typer.Exit:
    if _json_refusals:
        line = {
            "event": f"cnfs-api: {message}",
            "level": "error",
            "logger": "app.cli",
            "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        }
        typer.echo(json.dumps(line, ensure_ascii=False), err=True)
    else:
        typer.echo(f"cnfs-api: {message}", err=True)
    return typer.Exit(EXIT_CODE)


def _log_json_asked() -> bool:
    """LOG_JSON as the environment gives it, read before the settings are (they may be what is refused)."""
    return os.environ.get("LOG_JSON", "true").strip().lower() not in {"0", "false", "f", "no", "n", "off"}


def checked_settings(
    database: bool = True,
    port: tuple[str, int] | None = None,
    secret: bool = True,
    schema: bool = False,
    existing: bool = False,
    migrating: bool = False,
) -> Settings:
    """The start-up checks (app/startup.py): one line and exit status 2 on the first problem. `schema`:
    the command reads or writes the database without migrating it, which must then exist and be at the
    latest migration (checked without creating anything); `existing`: the database must exist already;
    `migrating`: a database that a newer release migrated is refused."""
    try:
        settings = load_settings(require_secret=secret)
        if port is not None:
            check_port(*port)
        if schema:
            check_schema(settings, *_revisions())
        elif database:
            check_database(settings, create=not existing)
        if migrating:
            check_not_newer(settings, _revisions()[1])
    except StartupError as exc:
        raise _refuse(str(exc)) from None
    return settings


def _log_like_the_service(settings: Settings) -> None:
    """The lines of the commands that migrate (Alembic's among them) in the service's format."""
    configure_logging(settings.log_level, settings.log_json)


@contextmanager
def _logging_for_the_command(settings: Settings) -> Iterator[None]:
    """The service's logging while the command runs; its lines written, and the logging as it was, when
    it ends (a command run in-process, by a test or a script, leaves no handler behind on a stream that
    may be gone)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    _log_like_the_service(settings)
    try:
        yield
    finally:
        for handler in root.handlers:
            if all(handler is not kept for kept in handlers):
                handler.close()
        root.handlers = handlers
        root.setLevel(level)


def run_migrations(settings: Settings, revision: str = "head", downgrade: bool = False) -> None:
    """Migrations (under the migration lock, see migrations/env.py); one line and exit status 2 when the
    database's revision is unknown to this release."""
    _ensure_sqlite_dir(settings)
    config = alembic_config(settings.database_url)
    config.attributes["pgbouncer"] = settings.database_pgbouncer
    try:
        if downgrade:
            command.downgrade(config, revision)
        else:
            command.upgrade(config, revision)
    except CommandError as exc:
        # A revision this release does not know: given on the command line, or the database's own (a newer
        # release migrated it).
        raise _refuse(f"cannot migrate: {exc}") from None


@cli.command()
def migrate(
    revision: Annotated[str, typer.Argument(help="Target revision (head, base, or an id).")] = "head",
    downgrade: Annotated[bool, typer.Option(help="Downgrade to the revision instead.")] = False,
) -> None:
    """Apply the database migrations (or downgrade)."""
    # Downgrading needs a database that exists: never create one for it.
    settings = checked_settings(existing=downgrade, migrating=True)
    try:
        ScriptDirectory.from_config(alembic_config(settings.database_url)).get_revisions(revision)
    except CommandError as exc:
        raise _refuse(f"cannot migrate to {revision}: {exc}") from None
    with _logging_for_the_command(settings):
        run_migrations(settings, revision, downgrade=downgrade)
    console.print(f"[green]database at {revision}[/green]")


@cli.command("seed-demo")
def seed_demo() -> None:
    """Load the demo data into an empty database and print the demo API keys it creates."""
    from app.demo import seed

    with _acting("cli_seed_demo"):
        _report_seed(asyncio.run(seed(checked_settings(secret=False, schema=True))))


def _acting(action: str) -> AbstractContextManager[None]:
    """The audit trail's actor for what a command writes: `system`, with the command as the action."""
    from app.core import audit

    return audit.acting(action)


def _report_seed(result: dict[str, Any]) -> None:
    if result["loaded"]:
        console.print(f"[green]demo data loaded[/green]: {result['summary']}")
    else:
        console.print("demo data: the database already has territories, nothing loaded")
    if result["keys"]:
        console.print("demo API keys (shown once; keep them, or make new ones with create-key):")
        for name, key in result["keys"]:
            console.print(f"  {name}: [bold]{key}[/bold]", soft_wrap=True)


@cli.command("create-key")
def create_key(
    name: Annotated[str, typer.Option(help="What the key is for.")],
    role: Annotated[str, typer.Option(help="admin, territory_manager, counsellor or viewer.")] = "admin",
    territory: Annotated[list[str] | None, typer.Option(help="Territory id (repeatable).")] = None,
    counsellor: Annotated[str | None, typer.Option(help="Counsellor id, for the counsellor role.")] = None,
) -> None:
    """Create an API key and print its secret (shown once)."""
    from app.demo import create_key as do_create

    settings = checked_settings(secret=False, schema=True)
    try:
        with _acting("cli_create_key"):
            secret = asyncio.run(
                do_create(
                    settings,
                    name=name,
                    role=role,
                    territory_ids=[uuid.UUID(t) for t in territory or []],
                    counsellor_id=uuid.UUID(counsellor) if counsellor else None,
                )
            )
    except (ValueError, AppError) as exc:
        # ValueError covers pydantic's ValidationError and malformed UUIDs.
        console.print(f"[red]cannot create the key:[/red] {getattr(exc, 'detail', None) or exc}")
        raise typer.Exit(2) from exc
    console.print(secret)


territories_cli = typer.Typer(help="Territories: the official referential.", no_args_is_help=True)
cli.add_typer(territories_cli, name="territories")


class _Bar:
    """The import's progress, on a rich progress bar."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._task = progress.add_task("importing", total=None)

    def start(self, total: int) -> None:
        self._progress.update(self._task, total=total)

    def advance(self, done: int) -> None:
        self._progress.advance(self._task, done)


@territories_cli.command("import")
def territories_import(
    file: Annotated[
        Path | None,
        typer.Option(help="A referential snapshot (.json.gz); default: the one shipped with the service."),
    ] = None,
) -> None:
    """Load the official referential (régions, départements, EPCI, métropoles, communes, former codes):
    creates what is missing, updates what changed, never deletes; a re-run changes nothing."""
    from app.territories import referential

    settings = checked_settings(secret=False, schema=True)
    try:
        snapshot = referential.read(file) if file else referential.shipped()
    except referential.SnapshotError as exc:
        console.print(f"[red]cannot import:[/red] {exc}")
        raise typer.Exit(2) from exc
    meta = snapshot.meta
    console.print(f"referential {meta.get('package')} {meta.get('version')} ({meta.get('licence')})")
    started = time.perf_counter()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress, _acting("cli_territories_import"):
        report = asyncio.run(_import(settings, snapshot, _Bar(progress)))
    _print_import(report, time.perf_counter() - started)


async def _import(settings: Settings, snapshot: Any, bar: _Bar) -> ImportReport:
    from app.db import make_engine, make_sessionmaker
    from app.territories import service

    engine = make_engine(settings.database_url, pgbouncer=settings.database_pgbouncer)
    try:
        async with make_sessionmaker(engine)() as session:
            report = await service.import_referential(session, snapshot, bar)
            await session.commit()
        await service.after_import(engine, report)
        return report
    finally:
        await engine.dispose()


stats_cli = typer.Typer(help="Statistics: the workshop rollup.", no_args_is_help=True)
cli.add_typer(stats_cli, name="stats")


@stats_cli.command("rebuild")
def stats_rebuild() -> None:
    """Recompute the workshop rollup (`workshop_monthly_stats`) whole from the workshops, in one transaction:
    after rows were loaded with the triggers disabled, or to repair it. Safe while the service runs."""
    settings = checked_settings(secret=False, schema=True)
    started = time.perf_counter()
    rows = asyncio.run(_rebuild_stats(settings))
    console.print(
        f"[green]workshop rollup rebuilt[/green]: {rows} rows in {time.perf_counter() - started:.1f}s"
    )


async def _rebuild_stats(settings: Settings) -> int:
    from sqlalchemy import func, select

    from app.db import make_engine
    from app.stats.models import workshop_monthly_stats
    from app.stats.rollup import rebuild

    engine = make_engine(settings.database_url, pgbouncer=settings.database_pgbouncer)
    try:
        async with engine.begin() as connection:
            await rebuild(connection)
            count = (
                await connection.execute(select(func.count()).select_from(workshop_monthly_stats))
            ).scalar()
        return int(count or 0)
    finally:
        await engine.dispose()


@cli.command()
def purge(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would go, change nothing (rolled back).")
    ] = False,
    now: Annotated[
        datetime | None,
        typer.Option(
            help="The instant the retention is counted from (default: now, UTC); for checks.",
            formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"],
        ),
    ] = None,
) -> None:
    """Personal data past its retention (REGISTRATION_RETENTION_MONTHS, COUNSELLOR_RETENTION_MONTHS,
    JOURNAL_RETENTION_DAYS): erases the registrants of workshops that ended that long ago, anonymises
    counsellors whose last assignment ended that long ago (never one whose assignment lasts or is to come),
    deletes old journal lines and expired Idempotency-Key responses, in one transaction, journaled
    (`cli_purge`). Statistics do not change. Safe to run daily: a second run finds nothing. Prints the
    counts; exit status 0."""
    settings = checked_settings(secret=False, schema=True)
    moment = None if now is None else (now if now.tzinfo else now.replace(tzinfo=UTC)).astimezone(UTC)
    with _logging_for_the_command(settings):
        report = asyncio.run(_purge(settings, moment, dry_run))
    verb = "would erase" if dry_run else "erased"
    typer.echo(
        f"purge{' (dry run, nothing changed)' if dry_run else ''}: {verb} {report.registrations} "
        f"registrations' personal data, {report.counsellors} counsellors anonymised, "
        f"{report.journal_lines} journal lines and {report.idempotency_records} stored responses deleted"
    )


async def _purge(settings: Settings, now: datetime | None, dry_run: bool) -> Any:
    from app.db import make_engine, make_sessionmaker
    from app.personal_data import journal, service

    retention = service.Retention(
        registration_months=settings.registration_retention_months,
        counsellor_months=settings.counsellor_retention_months,
        journal_days=settings.journal_retention_days,
        idempotency_hours=settings.idempotency_ttl_hours,
    )
    engine = make_engine(settings.database_url)
    try:
        async with make_sessionmaker(engine)() as session:
            with journal.command_context(service.PURGE_ACTION):
                report = await service.purge(session, retention, now)
            if dry_run:
                await session.rollback()
            else:
                await session.commit()
        return report
    finally:
        await engine.dispose()


def _print_import(report: ImportReport, seconds: float) -> None:
    table = Table("kind", "created", "updated", "unchanged")
    for kind in ("region", "departement", "metropole", "epci", "commune"):
        table.add_row(kind, str(report.created[kind]), str(report.updated[kind]), str(report.unchanged[kind]))
    table.add_row(
        "former codes",
        str(report.aliases_created),
        str(report.aliases_updated),
        str(report.aliases_unchanged),
    )
    console.print(table)
    if report.rewritten:
        console.print(f"{report.rewritten} territories followed their ancestors' new paths")
    if report.aliases_removed:
        console.print(f"{report.aliases_removed} former codes name a territory again and were removed")
    if report.obsolete:
        console.print(
            f"[yellow]{len(report.obsolete)} communes are stored under a former code[/yellow] (merged since; "
            f"kept, delete them once nothing refers to them): {', '.join(report.obsolete[:20])}"
        )
    console.print(f"[green]imported in {seconds:.1f} s[/green]")


open_data_cli = typer.Typer(help="Open data: the files of the national standards.", no_args_is_help=True)
cli.add_typer(open_data_cli, name="open-data")


@open_data_cli.command("export")
def open_data_export(
    directory: Annotated[
        Path, typer.Argument(help="Where the files go (created if missing); same-named files are replaced.")
    ],
    producer: Annotated[str, typer.Option(help="The producer's part of the file names.")] = "cnfs",
    territory: Annotated[str, typer.Option(help="The territory's part of the file names.")] = "france",
) -> None:
    """Write today's open-data files: the venues of public workshops in the standard of lieux de médiation
    numérique (CSV and JSON), named YYYY-MM-DD_<producer>_lieux-de-mediation-numerique_<territory>.csv;
    each file replaced atomically. Exit status 0 and one summary line, or non-zero and the reason."""
    from app.opendata import service

    settings = checked_settings(secret=False, schema=True)
    day = datetime.now(UTC).date()
    if not service.file_part(producer) or not service.file_part(territory):
        raise _refuse(
            "--producer and --territory need at least one letter or digit (example: --producer cnfs)"
        )
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with _logging_for_the_command(settings):
            report = asyncio.run(_open_data_export(settings, directory, day, producer, territory))
    except OSError as exc:
        typer.echo(
            f"cnfs-api: cannot write the open-data files into {directory}: {exc.strerror or exc}", err=True
        )
        raise typer.Exit(1) from None
    skipped = sum(report.skipped.values())
    details = ", ".join(f"{n} without {name}" for name, n in sorted(report.skipped.items()))
    typer.echo(
        f"open data {day.isoformat()}: {report.venues} venues written, {skipped} left out"
        + (f" ({details})" if details else "")
        + f", into {', '.join(path.name for path in report.files)}"
    )


async def _open_data_export(
    settings: Settings, directory: Path, day: date, producer: str, territory: str
) -> service_types.ExportReport:
    from app.db import make_engine, make_sessionmaker, read_execution_options
    from app.opendata import service

    engine = make_engine(settings.database_url, pgbouncer=settings.database_pgbouncer)
    try:
        # The venues and the statistics of one publication read one snapshot.
        async with make_sessionmaker(engine)() as session, session.begin():
            await session.connection(execution_options=read_execution_options(engine))
            return await service.export_directory(
                session,
                directory,
                day,
                producer,
                territory,
                threshold=settings.stats_disclosure_threshold,
            )
    finally:
        await engine.dispose()


# How much longer than SHUTDOWN_TIMEOUT_SECONDS gunicorn's arbiter waits for a worker to exit (its own
# shutdown: cancelling what is left, closing the pools) before it SIGKILLs it.
GRACE_MARGIN_SECONDS = 5


webhooks_cli = typer.Typer(help="Webhooks: the delivery worker.", no_args_is_help=True)
cli.add_typer(webhooks_cli, name="webhooks")


@webhooks_cli.command("deliver")
def webhooks_deliver(
    once: Annotated[
        bool, typer.Option("--once", help="Fan the feed out and send what is due once, then stop.")
    ] = False,
) -> None:
    """Deliver the webhooks (app/webhooks/delivery.py) until SIGTERM or SIGINT: copies the change feed into
    deliveries and sends them. Several may run at once, beside `serve`, on any machine: each delivery is
    sent by one of them at a time."""
    settings = checked_settings(secret=False, schema=True)
    with _logging_for_the_command(settings):
        asyncio.run(_deliver(settings, once))


async def _deliver(settings: Settings, once: bool) -> None:
    import signal

    from app.db import make_engine, make_sessionmaker
    from app.webhooks.delivery import Worker

    engine = make_engine(
        settings.database_url,
        pool_size=2,
        sqlite_busy_timeout_ms=settings.sqlite_busy_timeout_ms,
        lock_timeout_ms=settings.database_lock_timeout_ms,
        statement_timeout_ms=settings.database_statement_timeout_ms,
        connect_timeout=settings.database_connect_timeout_seconds,
        command_timeout=settings.database_command_timeout_seconds,
    )
    worker = Worker(make_sessionmaker(engine), settings)
    try:
        if once:
            queued, attempted = await worker.run_once()
            console.print(f"webhooks: {queued} deliveries queued, {attempted} attempted")
            return
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        logging.getLogger("app.webhooks").info("webhook delivery worker started")
        await worker.run(stop)
    finally:
        await worker.close()
        await engine.dispose()


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    workers: Annotated[int, typer.Option(envvar="WEB_CONCURRENCY", help="Worker processes.")] = 1,
    keep_alive: Annotated[
        int | None,
        typer.Option(help="Seconds an idle keep-alive connection stays open (KEEP_ALIVE_TIMEOUT_SECONDS)."),
    ] = None,
    migrate_first: Annotated[
        bool, typer.Option("--migrate/--no-migrate", help="Apply migrations first.")
    ] = True,
    demo: Annotated[
        bool | None,
        typer.Option(
            "--demo/--no-demo",
            help="Load demo data (and demo keys) into an empty database. Default: only on SQLite.",
        ),
    ] = None,
) -> None:
    """Serve the API: migrations applied, and on the embedded SQLite database, demo data loaded into an
    empty database."""
    global _json_refusals
    _json_refusals = _log_json_asked()
    try:
        _serve(host, port, workers, keep_alive, migrate_first, demo)
    finally:
        _json_refusals = False


def _serve(
    host: str, port: int, workers: int, keep_alive: int | None, migrate_first: bool, demo: bool | None
) -> None:
    from app.demo import seed

    load_demo = demo if demo is not None else checked_settings(database=False).is_sqlite
    # Settings, the port and the database are checked before anything is migrated; without migrations,
    # the demo data needs a database already migrated.
    settings = checked_settings(
        port=(host, port), schema=load_demo and not migrate_first, migrating=migrate_first
    )
    _log_like_the_service(settings)
    if migrate_first:
        run_migrations(settings)
    if load_demo:
        with _acting("cli_seed_demo"):
            _report_seed(asyncio.run(seed(settings)))
    if settings.log_json:
        # A log line like the others: with LOG_JSON, every line the running service writes is JSON.
        logging.getLogger("app.cli").info("Swagger UI: http://%s:%s/docs", host, port)
    else:
        console.print(
            f"Swagger UI: [bold]http://{host}:{port}/docs[/bold]  (click Authorize and paste an API key)"
        )
    # The server replaces this process: its workers then hold the application only, not this command line,
    # the migrations and the demo data.
    sys.stdout.flush()
    # The log lines still waiting for their batch (the migrations') are written before the process is
    # replaced.
    for handler in logging.getLogger().handlers:
        handler.flush()
    prepare_metrics_dir(workers)
    command = server_command(
        host,
        port,
        workers,
        keep_alive or settings.keep_alive_timeout_seconds,
        shutdown_timeout=settings.shutdown_timeout_seconds,
    )
    os.execv(command[0], command)


def prepare_metrics_dir(workers: int) -> None:
    """Several workers write their metrics into one directory (prometheus_client's multiprocess mode), which
    a scrape of any worker reads whole: PROMETHEUS_MULTIPROC_DIR, or a temporary directory made here (and
    removed when the server stops). Values left by an earlier run are deleted: counters start at zero.

    One worker keeps its values in memory, unless PROMETHEUS_MULTIPROC_DIR names a directory. An empty
    variable names none, and is removed (prometheus_client's older lower-case spelling too): the library
    turns its multiprocess mode on when the variable merely exists, and would then write its files into the
    working directory (read-only in the image: the server would not start)."""
    from app.core.gunicorn_config import MADE_BY_SERVE_ENV
    from app.core.metrics import MULTIPROCESS_ENV

    for name in (MULTIPROCESS_ENV, MULTIPROCESS_ENV.lower()):
        if os.environ.get(name) == "":
            del os.environ[name]
    directory = os.environ.get(MULTIPROCESS_ENV)
    if not directory:
        if workers <= 1:
            return
        directory = tempfile.mkdtemp(prefix="cnfs-api-metrics-")
        os.environ[MULTIPROCESS_ENV] = directory
        os.environ[MADE_BY_SERVE_ENV] = directory
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink(missing_ok=True)


def server_command(
    host: str, port: int, workers: int, keep_alive: int, shutdown_timeout: int = 20
) -> list[str]:
    """The server process: uvicorn for one worker; for several, gunicorn with uvicorn workers and the
    application loaded once before the workers are forked (`--preload`, `app.main:preloaded_app`), so that
    they share its memory (about 20 MB less private memory per worker than workers that each import it).

    The keep-alive is longer than the idle timeout of load balancers and client pools (60 s is common): the
    server must not close a connection that a client is about to reuse.

    SIGTERM (a deploy): the server closes its listening socket, lets the requests in flight finish for
    `shutdown_timeout` seconds (SHUTDOWN_TIMEOUT_SECONDS), cancels those still running (their transactions
    roll back), then runs the application's shutdown (the database pools closed) and exits. Under gunicorn
    each worker applies that bound itself (app.core.workers); the arbiter's `--graceful-timeout`, a few
    seconds longer, only SIGKILLs a worker that failed to."""
    if workers <= 1:
        return [
            sys.executable,
            "-m",
            "uvicorn",
            # The application as the workers below get it, its start-up objects out of the collector's reach.
            "app.main:preloaded_app",
            "--factory",
            "--host",
            host,
            "--port",
            str(port),
            "--no-access-log",
            # X-Forwarded-* are the application's to trust (FORWARDED_ALLOW_IPS, app.main), whatever the
            # server: uvicorn's own default trusts 127.0.0.1.
            "--no-proxy-headers",
            "--timeout-keep-alive",
            str(keep_alive),
            "--timeout-graceful-shutdown",
            str(shutdown_timeout),
        ]
    bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "app.main:preloaded_app()",
        "--worker-class",
        "app.core.workers.UvicornWorker",
        "--workers",
        str(workers),
        "--preload",
        "--bind",
        bind,
        "--keep-alive",
        str(keep_alive),
        "--graceful-timeout",
        str(shutdown_timeout + GRACE_MARGIN_SECONDS),
        "--log-level",
        "warning",
        "--error-logfile",
        "-",
        # gunicorn's lines in the service's format (JSON), not gunicorn's text format.
        "--logger-class",
        "app.core.gunicorn_logging.GunicornLogger",
        # The metrics' shared directory forgets the workers that exit.
        "--config",
        "python:app.core.gunicorn_config",
        # The workers trust no X-Forwarded-* themselves (gunicorn's default trusts 127.0.0.1): the
        # application does, from FORWARDED_ALLOW_IPS only.
        "--forwarded-allow-ips",
        "",
    ]


@cli.command()
def openapi(
    output: Annotated[Path | None, typer.Option(help="Write to this file instead of stdout.")] = None,
) -> None:
    """Print the OpenAPI document (docs/openapi.json is its reviewed copy)."""
    from app.main import create_app

    text = openapi_text(create_app(checked_settings(database=False)).openapi())
    if output:
        output.write_text(text, encoding="utf-8")
    else:
        typer.echo(text, nl=False)


def openapi_text(schema: dict[str, object]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False, sort_keys=False) + "\n"


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
