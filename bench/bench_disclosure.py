"""Benchmark of the statistical confidentiality of one breakdown (`app.stats.disclosure.protect`), in process.

    .venv/bin/python -m bench.bench_disclosure
    .venv/bin/python -m bench.bench_disclosure --rows 300 --tables 40

It runs on every answer of `/stats/workshops` to a caller without a key, once per breakdown: random tables
of a few shapes of counts (deterministic for a given seed), each protected three times, the best kept;
printed: the median and the slowest table per shape, in milliseconds."""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

from app.referentials.data import AgeBracket, SocialStatus
from app.stats.disclosure import protect

SHAPES: dict[str, Callable[[random.Random], int]] = {
    "small counts (0-12, a third zeros)": lambda r: r.choice((0, 0, 0, 1, 1, 2, 3, 4, 5, 7, 9, 12)),
    "mixed (40% zeros, some large)": lambda r: (
        0 if r.random() < 0.4 else r.randint(1, 12) if r.random() < 0.7 else r.randint(11, 300)
    ),
    "large counts (5-300)": lambda r: r.randint(5, 300),
    "sparse (85% zeros)": lambda r: 0 if r.random() < 0.85 else r.randint(1, 6),
    "on the bounds (0, 9, 10, 11)": lambda r: r.choice((0, 9, 10, 10, 11)),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[30, 300])
    parser.add_argument("--tables", type=int, default=40, help="tables per shape (at most 1000)")
    parser.add_argument("--threshold", type=int, default=11)
    parser.add_argument("--seed", type=int, default=11)
    arguments = parser.parse_args()
    generator = random.Random(arguments.seed)
    for rows_count in arguments.rows:
        for columns in ([bracket.value for bracket in AgeBracket], [status.value for status in SocialStatus]):
            for shape, draw in SHAPES.items():
                timings = []
                for _ in range(min(arguments.tables, 1000)):
                    rows = [{column: draw(generator) for column in columns} for _ in range(rows_count)]
                    totals = {column: sum(row[column] for row in rows) for column in columns}
                    row_totals = [sum(row.values()) for row in rows]
                    best = float("inf")
                    for _ in range(3):
                        started = time.perf_counter()
                        protect(rows, row_totals, totals, sum(totals.values()), arguments.threshold)
                        best = min(best, time.perf_counter() - started)
                    timings.append(best)
                median, slowest = statistics.median(timings) * 1000, max(timings) * 1000
                label = f"{rows_count:4} x {len(columns)}  {shape:36}"
                print(f"{label} median {median:6.2f} ms  slowest {slowest:6.2f} ms")


if __name__ == "__main__":
    main()
