"""Benchmark of GET /stats/workshops's reads on a national-size rollup (PostgreSQL), in process.

    .venv/bin/python -m bench.bench_stats --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/cnfs_stats

The database must be fresh and migrated (`cnfs-api migrate`): the script adds `--territories` communes and
`--workshops` workshops spread over 2021–2027 with one INSERT ... SELECT over generate_series (the triggers
off: `session_replication_role = replica`, which also skips the foreign keys to positions that do not
exist), times `app.stats.rollup.rebuild`, then answers a set of requests through the service, each five times
in its own read-only snapshot, and prints the median. With `--reuse`, the rows already loaded are kept."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from datetime import date
from typing import Any

from sqlalchemy import text

from app.core.auth import ANONYMOUS
from app.db import make_engine, make_sessionmaker, read_execution_options
from app.stats import service
from app.stats.rollup import rebuild

REGION = "00000000-0000-7000-8000-000000000001"
TERRITORIES = """
INSERT INTO territories (id, kind, code, name, name_sort, path, created_at, updated_at, version, search_name)
SELECT '{region}', 'region', '84', 'Région', 'region', '/{region}/', now(), now(), 1, 'region'
UNION ALL
SELECT u, 'commune', lpad(g::text, 5, '0'), 'Commune ' || g, 'commune ' || g, '/{region}/' || u || '/',
       now(), now(), 1, 'commune'
FROM (SELECT g, gen_random_uuid() AS u FROM generate_series(1, {count}) AS g) AS c
"""
WORKSHOPS = """
INSERT INTO workshops (id, position_id, territory_id, title, themes, themes_mask, level, format, online_url,
  starts_at, ends_at, duration_minutes, capacity, waitlist_capacity, registered_count, waitlisted_count,
  seats_left, status, public, created_at, updated_at, version, sequence, attendees, attendee_breakdown)
SELECT gen_random_uuid(), gen_random_uuid(), t.id, 'Atelier', th.themes, 1,
  (ARRAY['debutant', 'intermediaire', 'avance'])[1 + x.g % 3], 'remote', 'https://visio.example.org/b',
  x.s, x.s + interval '2 hours', 120, 12, 0, x.r, 0, 12 - x.r,
  CASE WHEN x.s > now() THEN 'scheduled' WHEN x.g % 20 = 0 THEN 'cancelled' ELSE 'completed' END,
  true, now(), now(), 1, 0,
  CASE WHEN x.s > now() OR x.g % 20 = 0 THEN 0 ELSE x.r END,
  CASE WHEN x.s > now() OR x.g % 20 = 0 THEN NULL ELSE jsonb_build_object(
    'age_brackets', jsonb_build_object('moins_de_douze', 0, 'douze_dix_huit', 0, 'dix_huit_vingt_quatre', 0,
      'vingt_cinq_trente_neuf', x.r / 2, 'quarante_cinquante_neuf', 0,
      'soixante_soixante_neuf', x.r - x.r / 2, 'soixante_dix_plus', 0, 'non_communique', 0),
    'social_statuses', jsonb_build_object('scolarise', 0, 'sans_emploi', x.r / 3, 'en_emploi', 0,
      'retraite', x.r - x.r / 3, 'non_communique', 0)) END
FROM (SELECT g, timestamptz '2021-01-01' + random() * 2555 * interval '1 day' AS s, g % 12 AS r,
             1 + (hashint4(g) & 2147483647) % {territories} AS ti
      FROM generate_series(1, {count}) AS g) AS x
JOIN (SELECT id, row_number() OVER (ORDER BY id) AS n FROM territories WHERE kind = 'commune') AS t
  ON t.n = x.ti
CROSS JOIN LATERAL (SELECT (ARRAY['["email"]', '["email", "sante"]',
  '["sante", "bureautique", "parentalite"]', '["insertion_professionnelle"]',
  '["securite_numerique", "email"]'])[1 + x.g % 5]::json AS themes) AS th
"""


async def load(url: str, territories: int, workshops: int) -> None:
    engine = make_engine(url, statement_timeout_ms=3_600_000)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("SET LOCAL session_replication_role = replica"))
            await conn.execute(text(TERRITORIES.format(region=REGION, count=territories)))
            started = time.perf_counter()
            await conn.execute(text(WORKSHOPS.format(territories=territories, count=workshops)))
            print(f"{workshops} workshops loaded in {time.perf_counter() - started:.1f} s (triggers off)")
        async with engine.begin() as conn:
            started = time.perf_counter()
            await rebuild(conn)
            print(f"rebuild: {time.perf_counter() - started:.1f} s")
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("VACUUM ANALYZE workshops"))
            await conn.execute(text("VACUUM ANALYZE workshop_monthly_stats"))
    finally:
        await engine.dispose()


async def measure(url: str) -> None:
    engine = make_engine(url, statement_timeout_ms=600_000)
    sessions = make_sessionmaker(engine)
    try:
        async with engine.connect() as conn:
            rows, once = (
                await conn.execute(
                    text("SELECT count(*), count(*) FILTER (WHERE theme = '') FROM workshop_monthly_stats")
                )
            ).one()
            commune = (await conn.execute(text("SELECT id FROM territories WHERE kind = 'commune'"))).scalar()
        print(f"rollup: {rows} rows, {once} with theme ''")
        edges = {"starts": date(2025, 1, 15), "ends": date(2025, 12, 10)}
        cases: list[tuple[str, dict[str, Any]]] = [
            ("national, all time", {}),
            ("national, all time, by theme", {"group_by": "theme"}),
            ("national, all time, by month", {"group_by": "month"}),
            ("national, all time, by territory", {"group_by": "territory"}),
            ("national, 2025 (whole months)", {"starts": date(2025, 1, 1), "ends": date(2025, 12, 31)}),
            ("national, 2025-01-15..2025-12-10 (two edges)", edges),
            ("the same, by theme", {**edges, "group_by": "theme"}),
            ("a region's subtree, two edges, by month", {**edges, "within": REGION, "group_by": "month"}),
            ("one commune, two edges, by theme", {**edges, "territory_id": commune, "group_by": "theme"}),
        ]
        for label, params in cases:
            times = []
            for _ in range(5):
                async with sessions() as session:
                    await session.connection(execution_options=read_execution_options(engine))
                    started = time.perf_counter()
                    await service.workshop_stats(
                        session,
                        ANONYMOUS,
                        territory_id=params.get("territory_id"),
                        within=params.get("within"),
                        starts=params.get("starts"),
                        ends=params.get("ends"),
                        group_by=service.WorkshopGroup(params.get("group_by", "none")),
                        threshold=11,
                    )
                    times.append((time.perf_counter() - started) * 1000)
            print(f"{label:48s} {statistics.median(times):8.1f} ms")
    finally:
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", required=True, help="a fresh, migrated PostgreSQL database")
    parser.add_argument("--workshops", type=int, default=1_000_000)
    parser.add_argument("--territories", type=int, default=460)
    parser.add_argument("--reuse", action="store_true", help="keep the rows already loaded")
    args = parser.parse_args()
    if not args.reuse:
        asyncio.run(load(args.database_url, args.territories, args.workshops))
    asyncio.run(measure(args.database_url))


if __name__ == "__main__":
    main()
