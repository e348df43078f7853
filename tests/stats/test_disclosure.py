"""Statistical confidentiality: every small count hidden, no hidden cell worked out of the answer."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.referentials.data import AgeBracket, SocialStatus
from app.stats.disclosure import protect
from tests.stats.recovery import Cell, equations, pinned_cells, recover, recoverable_cells

AGES = [bracket.value for bracket in AgeBracket]
STATUSES = [status.value for status in SocialStatus]
THRESHOLD = 11


@dataclass
class Table:
    """The true figures of one breakdown of an answer."""

    rows: list[dict[str, int]]
    totals: dict[str, int]

    @property
    def row_totals(self) -> list[int]:
        return [sum(row.values()) for row in self.rows]

    @property
    def grand_total(self) -> int:
        return sum(self.totals.values())

    def cells(self) -> list[tuple[Cell, int]]:
        found: list[tuple[Cell, int]] = []
        for index, row in enumerate(self.rows):
            found.extend(((index, column), value) for column, value in row.items())
        found.extend(((None, column), value) for column, value in self.totals.items())
        return found

    def protect(self, threshold: int = THRESHOLD) -> Published:
        rows, totals = protect(self.rows, self.row_totals, self.totals, self.grand_total, threshold)
        return Published(rows, totals, self.row_totals, self.grand_total)


@dataclass
class Published:
    rows: list[dict[str, int | None]]
    totals: dict[str, int | None]
    row_totals: list[int]
    grand_total: int

    def get(self, cell: Cell) -> int | None:
        row, column = cell
        return self.totals[column] if row is None else self.rows[row][column]

    def recover(self) -> dict[Cell, Fraction]:
        return recover(self.rows, self.row_totals, self.totals, self.grand_total)

    def hidden(self) -> list[Cell]:
        unknowns, _ = equations(self.rows, self.row_totals, self.totals, self.grand_total)
        return unknowns

    def lines_of(self, cell: Cell) -> list[list[int | None]]:
        """The published cells of the lines through a cell that carry an equation: its row, and its column
        when there are items."""
        row, column = cell
        lines = [list((self.totals if row is None else self.rows[row]).values())]
        if self.rows:
            lines.append([line[column] for line in self.rows] + [self.totals[column]])
        return lines

    def reader_bounds(self, truth: Table, threshold: int) -> tuple[dict[Cell, int], dict[Cell, int | None]]:
        """What a reader knows of each hidden cell, granted to know which are small counts: from 1 to
        threshold - 1 for a small count, at least the threshold for another, but at least 0 for any when
        one of its lines shows no non-zero cell (a hidden zero may be there)."""
        true_values = dict(truth.cells())
        lower: dict[Cell, int] = {}
        upper: dict[Cell, int | None] = {}
        for cell in self.hidden():
            small = true_values[cell] < threshold
            open_line = any(
                all(not value for value in line if value is not None) for line in self.lines_of(cell)
            )
            lower[cell] = 0 if open_line else (1 if small else threshold)
            upper[cell] = threshold - 1 if small else None
        return lower, upper

    def pinned(self, truth: Table, threshold: int) -> list[Cell]:
        lower, upper = self.reader_bounds(truth, threshold)
        return pinned_cells(self.rows, self.row_totals, self.totals, self.grand_total, lower, upper)


def everything_hidden(table: Table) -> Published:
    return Published(
        [dict.fromkeys(row) for row in table.rows],
        dict.fromkeys(table.totals),
        table.row_totals,
        table.grand_total,
    )


# -- random tables: small counts, many zeros, some large ones ---------------------------------------------

count = st.one_of(
    st.just(0), st.just(0), st.integers(1, 3), st.integers(1, 12), st.integers(9, 14), st.integers(11, 500)
)


def counts_near(threshold: int) -> st.SearchStrategy[int]:
    """Counts that sit on the bounds: 1, threshold - 1 and threshold, where a hidden cell can move one way."""
    return st.one_of(
        st.just(0), st.just(1), st.just(max(threshold - 1, 0)), st.integers(threshold, threshold + 2), count
    )


@st.composite
def tables(draw: st.DrawFn, max_rows: int = 30, overlap: bool = True, near: int | None = None) -> Table:
    columns = draw(st.sampled_from([AGES, STATUSES]))
    cell = count if near is None else counts_near(near)
    line = st.lists(cell, min_size=len(columns), max_size=len(columns)).map(
        lambda values: dict(zip(columns, values, strict=True))
    )
    rows = draw(st.lists(line, max_size=max_rows))
    if not rows:  # group_by=none: the totals alone
        return Table([], draw(line))
    totals = {column: sum(row[column] for row in rows) for column in columns}
    if overlap and draw(st.booleans()):
        # group_by=theme: a workshop of two themes counts in both items, once in the totals.
        totals = {
            column: draw(st.integers(max(row[column] for row in rows), total))
            for column, total in totals.items()
        }
    return Table(rows, totals)


thresholds = st.one_of(st.just(THRESHOLD), st.integers(2, 15))


def zero_hidden_only_where_no_other_cell_can(published: Published, cell: Cell) -> bool:
    """The rule for zeros: hidden only in a line whose non-zero cells are all hidden already."""
    return any(all(not value for value in line if value is not None) for line in published.lines_of(cell))


@settings(max_examples=300, deadline=None)
@given(table=tables(), threshold=thresholds)
def test_no_hidden_cell_is_given_back_by_the_published_figures(table: Table, threshold: int) -> None:
    published = table.protect(threshold)

    assert published.recover() == {}
    assert list(published.totals) == list(table.totals)
    assert [list(row) for row in published.rows] == [list(row) for row in table.rows]
    for cell, value in table.cells():
        shown = published.get(cell)
        if 1 <= value < threshold:
            assert shown is None, f"{cell} = {value} is a small count"
        elif shown is not None:
            assert shown == value
        elif value == 0:
            assert zero_hidden_only_where_no_other_cell_can(published, cell), cell
    again = table.protect(threshold)
    assert (again.rows, again.totals) == (published.rows, published.totals)


@settings(max_examples=250, deadline=None)
@given(data=st.data())
def test_no_hidden_cell_is_pinned_by_the_bounds_either(data: st.DataObject) -> None:
    threshold = data.draw(thresholds)
    table = data.draw(tables(max_rows=4, overlap=False, near=threshold))
    published = table.protect(threshold)
    pinned = set(published.pinned(table, threshold))
    if pinned:
        # Only where no suppression at all could help: even with everything hidden, those cells are pinned.
        beyond = set(everything_hidden(table).pinned(table, threshold))
        assert pinned <= beyond, sorted(pinned - beyond, key=str)


@given(table=tables(max_rows=5), threshold=st.integers(-3, 1))
def test_a_threshold_of_one_or_less_hides_nothing(table: Table, threshold: int) -> None:
    published = table.protect(threshold)
    assert published.rows == table.rows
    assert published.totals == table.totals


# -- the adversary can find what a careless publication leaves --------------------------------------------


def hide(table: Table, cells: list[Cell]) -> Published:
    rows: list[dict[str, int | None]] = [dict(row) for row in table.rows]
    totals: dict[str, int | None] = dict(table.totals)
    for row, column in cells:
        (totals if row is None else rows[row])[column] = None
    return Published(rows, totals, table.row_totals, table.grand_total)


def five_columns(*rows: tuple[int, ...]) -> Table:
    columns = STATUSES
    items = [dict(zip(columns, row, strict=True)) for row in rows]
    return Table(items, {column: sum(item[column] for item in items) for column in columns})


S0, S1, S2, S3, S4 = STATUSES


def test_the_adversary_finds_a_lone_hidden_cell_in_a_row() -> None:
    table = five_columns((4, 20, 30, 0, 12), (25, 40, 14, 11, 0))
    published = hide(table, [(0, S0), (1, S0), (None, S0)])  # the column is safe, not the row
    assert published.recover() == {(0, S0): 4, (1, S0): 25, (None, S0): 29}


def test_the_adversary_finds_a_lone_hidden_cell_in_a_column() -> None:
    table = five_columns((4, 20, 30, 0, 12), (25, 40, 14, 11, 0))
    published = hide(table, [(0, S0), (0, S1)])  # two in the row, alone in each column
    assert published.recover() == {(0, S0): 4, (0, S1): 20}


def test_the_adversary_finds_a_bridge_although_every_line_has_two_hidden_cells() -> None:
    # Rows 0-1 hide columns 0-1, rows 2-3 columns 2-3, row 4 joins the two blocks through columns 1 and 2:
    # every row and column has two hidden cells or more, yet row 4's are each the only link between the
    # blocks, and their sums with the exact totals give them back.
    table = five_columns(
        (3, 5, 20, 20, 0), (6, 2, 20, 20, 0), (20, 20, 4, 7, 0), (20, 20, 2, 9, 0), (20, 8, 6, 20, 0)
    )
    blocks = [(0, S0), (0, S1), (1, S0), (1, S1), (2, S2), (2, S3), (3, S2), (3, S3)]
    published = hide(table, [*blocks, (4, S1), (4, S2)])
    assert published.recover() == {(4, S1): 8, (4, S2): 6}
    assert recoverable_cells(
        published.rows, published.row_totals, published.totals, published.grand_total
    ) == [
        (4, S1),
        (4, S2),
    ]
    assert hide(table, blocks).recover() == {}  # four-cell cycles: nothing given back


def test_the_adversary_finds_a_row_whose_count_sits_in_one_bracket() -> None:
    table = five_columns((5, 0, 0, 0, 0), (30, 12, 40, 20, 15), (25, 11, 14, 30, 18))
    # Every other cell of the row is a published zero, and the row's exact total is the hidden cell; two
    # other rows in its column hide theirs too.
    published = hide(table, [(0, S0), (1, S0), (2, S0), (1, S1), (2, S1)])
    assert published.recover() == {(0, S0): 5}


def test_a_hidden_zero_saves_that_row() -> None:
    table = five_columns((5, 0, 0, 0, 0), (30, 12, 40, 20, 15), (25, 11, 14, 30, 18))
    published = table.protect()
    assert published.rows[0] == {S0: None, S1: None, S2: 0, S3: 0, S4: 0}
    assert published.recover() == {}
    assert published.pinned(table, THRESHOLD) == []


def test_the_adversary_with_bounds_finds_two_ones() -> None:
    # Two hidden cells left 2 between them, each at least 1: both are 1.
    table = five_columns((1, 1, 30, 0, 40), (1, 1, 20, 50, 30), (30, 40, 25, 20, 35))
    published = hide(table, [(0, S0), (0, S1), (1, S0), (1, S1)])
    assert published.recover() == {}
    assert set(published.pinned(table, THRESHOLD)) == {(0, S0), (0, S1), (1, S0), (1, S1)}
    assert table.protect().pinned(table, THRESHOLD) == []
    # And two small counts left 20 between them, each at most 10: both are 10.
    table = five_columns((10, 10, 30, 0, 40), (10, 10, 20, 50, 30), (30, 40, 25, 20, 35))
    published = hide(table, [(0, S0), (0, S1), (1, S0), (1, S1)])
    assert set(published.pinned(table, THRESHOLD)) == {(0, S0), (0, S1), (1, S0), (1, S1)}
    assert table.protect().pinned(table, THRESHOLD) == []


def test_the_adversary_with_bounds_leaves_what_can_move() -> None:
    table = five_columns((2, 3, 30, 0, 40), (4, 5, 20, 50, 30), (30, 40, 25, 20, 35))
    published = hide(table, [(0, S0), (0, S1), (1, S0), (1, S1)])
    assert published.pinned(table, THRESHOLD) == []


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_the_bounded_adversary_agrees_with_counting_every_solution(data: st.DataObject) -> None:
    """On tables small enough to list every solution, the cells taking one value are those it reports."""
    columns = STATUSES[:3]
    line = st.lists(st.integers(0, 4), min_size=3, max_size=3).map(
        lambda values: dict(zip(columns, values, strict=True))
    )
    rows = data.draw(st.lists(line, max_size=2))
    totals = {column: sum(row[column] for row in rows) for column in columns} if rows else data.draw(line)
    table = Table(rows, totals)
    cells = [cell for cell, _ in table.cells()]
    published = hide(table, data.draw(st.lists(st.sampled_from(cells), unique=True, max_size=4)))
    threshold = data.draw(st.integers(2, 6))
    lower, upper = published.reader_bounds(table, threshold)
    truth = dict(table.cells())
    unknowns, system = equations(
        published.rows, published.row_totals, published.totals, published.grand_total
    )
    if any(not lower[cell] <= truth[cell] <= (upper[cell] or truth[cell]) for cell in unknowns):
        return  # bounds that exclude the truth: not a publication protect makes (a zero hidden anywhere)
    ceiling = max([table.grand_total, *table.row_totals])
    ranges = [range(lower[cell], min(ceiling, upper[cell] or ceiling) + 1) for cell in unknowns]
    seen: dict[Cell, set[int]] = {cell: set() for cell in unknowns}
    for values in itertools.product(*ranges):
        if all(sum(c * values[v] for v, c in coefficients.items()) == rest for coefficients, rest in system):
            for cell, value in zip(unknowns, values, strict=True):
                seen[cell].add(value)
    assert published.pinned(table, threshold) == [cell for cell in unknowns if len(seen[cell]) == 1]


# -- the examples of the contract --------------------------------------------------------------------------


def test_a_lone_small_count_in_a_row_takes_the_smallest_other_non_zero_cell_with_it() -> None:
    table = five_columns((3, 40, 25, 18, 0), (60, 50, 45, 40, 30), (70, 55, 35, 60, 25))
    published = table.protect()
    assert published.rows[0] == {S0: None, S1: 40, S2: 25, S3: None, S4: 0}
    # The same holds down the columns: the 3 and the 18 each take the smallest other cell of their column,
    # and so on until every line with a hidden cell has two that can move against each other.
    assert published.rows[1] == {S0: None, S1: 50, S2: 45, S3: None, S4: 30}
    assert published.rows[2] == dict(zip(STATUSES, (70, 55, 35, 60, 25), strict=True))
    assert published.totals == {S0: 133, S1: 145, S2: 105, S3: 118, S4: 55}
    assert published.recover() == {}
    assert published.pinned(table, THRESHOLD) == []


def test_a_lone_small_count_in_a_column_takes_the_smallest_other_non_zero_cell_of_the_column() -> None:
    # The 7 is its column's only small count (its row's other one, the 4, has the 3 in its own column).
    table = five_columns((50, 3, 40, 45, 45), (7, 4, 50, 50, 50), (30, 60, 60, 60, 60), (45, 60, 60, 60, 60))
    published = table.protect()
    assert published.rows[1][S1] is None
    assert [row[S0] for row in published.rows] == [50, None, None, 45]  # 30: the smallest other one
    assert published.totals[S0] == 132
    assert published.recover() == {}
    assert published.pinned(table, THRESHOLD) == []


def test_the_totals_row_is_protected_like_any_row() -> None:
    # group_by=none: no items, the totals alone.
    table = Table([], dict(zip(AGES, (0, 4, 120, 80, 95, 60, 33, 0), strict=True)))
    published = table.protect()
    assert published.totals == dict(zip(AGES, (0, None, 120, 80, 95, 60, None, 0), strict=True))
    assert published.recover() == {}


def test_zeros_stay_zeros_where_a_non_zero_cell_can_cover() -> None:
    table = five_columns((5, 0, 0, 0, 30), (20, 0, 0, 0, 40))
    published = table.protect()
    assert all(published.rows[row][column] == 0 for row in (0, 1) for column in (S1, S2, S3))
    assert published.recover() == {}


def test_inconsistent_figures_are_refused() -> None:
    with pytest.raises(ValueError, match="total"):
        protect([{"a": 1, "b": 2}], [4], {"a": 1, "b": 2}, 3, THRESHOLD)
    with pytest.raises(ValueError, match="grand total"):
        protect([], [], {"a": 1, "b": 2}, 4, THRESHOLD)
    with pytest.raises(ValueError, match="columns"):
        protect([{"a": 1}], [1], {"a": 1, "b": 0}, 1, THRESHOLD)


def test_a_large_table_is_protected_in_a_few_milliseconds() -> None:
    """It runs on every request without a key: 300 items of small counts, the worst case for the search."""
    import random

    generator = random.Random(7)
    rows = [{age: generator.choice((0, 0, 0, 1, 2, 3, 5, 8, 12)) for age in AGES} for _ in range(300)]
    table = Table(rows, {age: sum(row[age] for row in rows) for age in AGES})
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        published = table.protect()
        timings.append(time.perf_counter() - started)
    # The bound leaves room for a loaded machine; the figure itself is a few milliseconds (see the README).
    assert min(timings) < 0.05, timings
    assert published.recover() == {}
