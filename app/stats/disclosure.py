"""Statistical confidentiality of one breakdown table: small counts hidden so that no sum gives them back.

The table is the breakdown of each item (age brackets or social statuses) and the totals row. A reader knows
each row's sum exactly (an item's `attendees`, the grand total for the totals row) and, when there are items,
each column's: items against totals (assumed even where items overlap, which only arms the reader more).
Those equations are the incidence matrix of the bipartite graph whose vertices are the lines (rows, columns)
and whose edges are the hidden cells; its row space is the cut space, so a hidden cell is given back exactly
when it lies on no cycle of that graph.

Bounds arm the reader further, granted even to know which hidden cells are small counts: those are from 1
to threshold - 1, the others at least the threshold, except where a hidden cell may be a zero, which the
published answer shows (a zero is hidden only in a line, row or column, whose non-zero cells are all hidden).
Written with the totals row negated, every line says "these cells add up to a known figure", and two solutions
differ by a circulation: +1 and -1 alternating along cycles, each cell moving the way its bounds leave room
for. The system is totally unimodular, so a cell's possible values are an interval of integers, wider than
one value exactly when the cell lies on a directed cycle of the graph with an arc row -> column for each
hidden cell that can go up (in those signed terms) and column -> row for each that can go down. `protect`
puts every hidden cell on such a cycle, which implies the cycle of the first guarantee; where even hiding the
whole table could not (a line whose every cell is threshold - 1, say), on a cycle.

With at most a few columns, cycles are checked through reachability between columns (a column reaches another
through a row whose cell in the first can go down and in the second up): bit operations, linear in the rows.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence

_UP = 1  # the cell can grow by one (in the signed terms above) and stay within what the reader knows of it
_DOWN = 2
_UNBOUNDED = 1 << 62


def protect(
    rows: Sequence[Mapping[str, int]],
    row_totals: Sequence[int],
    totals: Mapping[str, int],
    grand_total: int,
    threshold: int,
) -> tuple[list[dict[str, int | None]], dict[str, int | None]]:
    """The rows and the totals row as they may be published: every hidden cell is `None`.

    `rows[i]` adds up to `row_totals[i]` and `totals` to `grand_total`; the columns are `totals`' keys, in
    their order. A cell from 1 to threshold - 1 is hidden (a threshold of 1 or less hides nothing), then other
    cells until every hidden cell keeps at least two possible values given the published figures: the smallest
    non-zero cells first, a zero only in a line that has no visible non-zero cell left. Deterministic: the
    same table gives the same answer. Figures that do not add up raise ValueError.
    """
    columns = list(totals)
    width = len(columns)
    if len(row_totals) != len(rows):
        raise ValueError("one row total per row")
    values: list[int] = []
    for row, row_total in zip(rows, row_totals, strict=True):
        if row.keys() != totals.keys():
            raise ValueError("every row has the columns of the totals")
        cells = [row[column] for column in columns]
        if sum(cells) != row_total:
            raise ValueError("a row does not add up to its total")
        values.extend(cells)
    values.extend(totals[column] for column in columns)
    if sum(values[len(values) - width :]) != grand_total:
        raise ValueError("the totals do not add up to the grand total")
    if any(value < 0 for value in values):
        raise ValueError("counts are never negative")

    if threshold > 1 and width:
        hidden = _Table(values, len(rows), width, threshold).solve()
    else:
        hidden = bytearray(len(values))
    published = [None if hide else value for value, hide in zip(values, hidden, strict=True)]
    out_rows = [
        dict(zip(columns, published[index * width : (index + 1) * width], strict=True))
        for index in range(len(rows))
    ]
    return out_rows, dict(zip(columns, published[len(rows) * width :], strict=True))


class _Table:
    """Cells in one flat list, row by row, the totals row last (row index n)."""

    def __init__(self, values: list[int], n: int, m: int, threshold: int) -> None:
        self.values = values
        self.n = n
        self.m = m
        self.size = (n + 1) * m
        self.threshold = threshold
        # Without items there is no column equation (group_by=none publishes the totals alone).
        self.columns_bind = n > 0
        # The primary suppression: every small count.
        self.hidden = bytearray(0 < value < threshold for value in values)
        # Visible non-zero cells left in each line (after the primary suppression: the large ones). None left
        # opens the line: a zero there may be hidden, so the reader can no longer take a hidden cell of that
        # line to be 1 or more.
        large = [value >= threshold for value in values]
        self.row_left = [sum(large[start : start + m]) for start in range(0, self.size, m)]
        self.column_left = [sum(large[column::m]) for column in range(m)]
        items = n * m
        items_part, totals_part = values[:items], values[items:]
        self.moves_closed = self._moves(items_part, closed=True, total=False) + self._moves(
            totals_part, closed=True, total=True
        )
        self.moves_open = self._moves(items_part, closed=False, total=False) + self._moves(
            totals_part, closed=False, total=True
        )

    def _moves(self, values: list[int], *, closed: bool, total: bool) -> list[int]:
        """Where each cell can go, once hidden, within what a reader told its kind knows of it: a small
        count is from 1 to threshold - 1, another cell at least the threshold, except that in an open line
        any hidden cell may be a zero."""
        threshold = self.threshold
        by_value = {}
        for value in set(values):
            low = (threshold if value >= threshold else 1) if closed else 0
            high = threshold - 1 if value < threshold else _UNBOUNDED
            up, down = value < high, value > low
            if total:  # the totals row enters the equations with a minus sign
                up, down = down, up
            by_value[value] = (_UP if up else 0) | (_DOWN if down else 0)
        return [by_value[value] for value in values]

    def is_open(self, index: int) -> bool:
        row, column = divmod(index, self.m)
        return self.row_left[row] == 0 or (self.columns_bind and self.column_left[column] == 0)

    def moves(self, index: int) -> int:
        return self.moves_open[index] if self.is_open(index) else self.moves_closed[index]

    def hide(self, index: int) -> None:
        if self.hidden[index]:
            return
        self.hidden[index] = 1
        if self.values[index]:
            self.row_left[index // self.m] -= 1
            self.column_left[index % self.m] -= 1

    def candidate_moves(self, index: int) -> int:
        """The moves of a cell once hidden; -1 for a zero that may not be hidden."""
        if self.hidden[index]:
            return self.moves(index)
        if self.values[index]:
            # Visible, so its lines are closed until it is hidden: what it may do at least.
            return self.moves_closed[index]
        return self.moves_open[index] if self.is_open(index) else -1

    def refresh(self, candidates: list[int], cells: tuple[int, ...]) -> None:
        """Hiding these cells changed what their rows and columns allow."""
        m = self.m
        for row in {cell // m for cell in cells}:
            for index in self._line(row):
                candidates[index] = self.candidate_moves(index)
        for column in {cell % m for cell in cells}:
            for index in range(column, self.size, m):
                candidates[index] = self.candidate_moves(index)

    # -- the steps ------------------------------------------------------------------------------------------

    def solve(self) -> bytearray:
        if any(self.hidden):
            self._settle_lines()
            self._close_cycles()
        return self.hidden

    def _line(self, line: int) -> range:
        if line <= self.n:
            return range(line * self.m, (line + 1) * self.m)
        return range(line - self.n - 1, self.size, self.m)

    def _settle_lines(self) -> None:
        """Each line with a hidden cell gets one that can go up and another that can go down.

        Necessary for a directed cycle through the line, and cheap; most tables need nothing more."""
        lines = self.n + 1 + (self.m if self.columns_bind else 0)
        queue = deque(range(lines))
        queued = bytearray(b"\x01" * lines)
        while queue:
            line = queue.popleft()
            queued[line] = 0
            for index in self._settle(line):
                if line <= self.n:
                    other = self.n + 1 + index % self.m if self.columns_bind else -1
                else:
                    other = index // self.m
                if other >= 0 and not queued[other]:
                    queued[other] = 1
                    queue.append(other)

    def _need(self, cells: range) -> int:
        """What the line's hidden cells lack: 0 when one can go up and another down (or none is hidden)."""
        hidden, row_left, column_left, m = self.hidden, self.row_left, self.column_left, self.m
        bind = self.columns_bind
        count = ups = downs = 0
        up_cell = down_cell = -1
        for index in cells:
            if hidden[index]:
                count += 1
                if row_left[index // m] == 0 or (bind and column_left[index % m] == 0):
                    moves = self.moves_open[index]
                else:
                    moves = self.moves_closed[index]
                if moves & _UP:
                    ups += 1
                    up_cell = index
                if moves & _DOWN:
                    downs += 1
                    down_cell = index
        if not count or (ups and downs and not (ups == 1 and downs == 1 and up_cell == down_cell)):
            return 0
        return (0 if ups else _UP) | (0 if downs else _DOWN) or _UP | _DOWN

    def _settle(self, line: int) -> list[int]:
        cells = self._line(line)
        added: list[int] = []
        while need := self._need(cells):
            visible = [index for index in cells if not self.hidden[index] and self.values[index]]
            if visible:
                choice = min(visible, key=lambda index: (self.values[index], index))
            else:
                zeros = [
                    index
                    for index in cells
                    if not self.hidden[index] and max(self.candidate_moves(index), 0) & need
                ]
                if not zeros:
                    return added  # left to the next step
                choice = zeros[0]
            self.hide(choice)
            added.append(choice)
        return added

    def _close_cycles(self) -> None:
        """Every hidden cell on a directed cycle, else (where no table could do it) on a cycle at least."""
        levels: dict[int, int] = {}
        # The cells that stay weak even with the whole table hidden: no suppression saves them from the bounds
        # (a line whose every cell is threshold - 1, say); they get the cycle only. Found when first needed.
        beyond: set[int] | None = None
        while weak := [index for index in self.weak_cells() if beyond is None or index not in beyond]:
            covered: set[int] = set()
            stuck: list[int] = []
            candidates = [self.candidate_moves(index) for index in range(self.size)]
            for index in weak:
                if index in covered or (beyond is not None and index in beyond):
                    continue
                rectangle = self._rectangle(index, candidates, directed=True)
                if rectangle is None:
                    if beyond is None:
                        beyond = set(self._everything_hidden().weak_cells())
                    if index not in beyond:
                        stuck.append(index)
                    continue
                for cell in rectangle:
                    self.hide(cell)
                self.refresh(candidates, rectangle)
                covered.update(rectangle)
            if not covered:
                for index in stuck:
                    self._widen(index, levels)
        if not beyond:
            return  # every hidden cell is on a directed cycle, hence on a cycle
        while (weak := self.weak_cells(directed=False)) and not all(self.hidden):
            candidates = [self.candidate_moves(index) for index in range(self.size)]
            rectangles = [self._rectangle(index, candidates, directed=False) for index in weak]
            if all(rectangle is None for rectangle in rectangles):
                for index in weak:
                    self._widen(index, levels)
                continue
            for rectangle in rectangles:
                for cell in rectangle or ():
                    self.hide(cell)

    def _widen(self, index: int, levels: dict[int, int]) -> None:
        """Hide the cell's row and column, then, if that was not enough, everything."""
        level = levels.get(index, 0) + 1
        levels[index] = level
        if level == 1:
            row, column = divmod(index, self.m)
            for cell in self._line(row):
                self.hide(cell)
            for cell in range(column, self.size, self.m):
                self.hide(cell)
        else:
            for cell in range(self.size):
                self.hide(cell)

    def _everything_hidden(self) -> _Table:
        twin = _Table(self.values, self.n, self.m, self.threshold)
        twin.hidden = bytearray(b"\x01" * self.size)
        twin.row_left = [0] * (self.n + 1)
        twin.column_left = [0] * self.m
        return twin

    def _rectangle(self, index: int, moves: list[int], *, directed: bool) -> tuple[int, int, int] | None:
        """The cheapest three cells closing a cycle of four through this one: (row, column'), (row', column),
        (row', column'); for a directed cycle, each able to move the way the cycle needs."""
        m = self.m
        row, column = divmod(index, m)
        own = moves[index]
        best: tuple[int, int, int] | None = None
        best_cost: tuple[int, int, int] | None = None
        for other_column in range(m):
            a = row * m + other_column
            if other_column == column or moves[a] < 0:
                continue
            for other_row in range(self.n + 1):
                b = other_row * m + column
                d = other_row * m + other_column
                if other_row == row or moves[b] < 0 or moves[d] < 0:
                    continue
                if directed and not (
                    (own & _UP and moves[a] & _DOWN and moves[b] & _DOWN and moves[d] & _UP)
                    or (own & _DOWN and moves[a] & _UP and moves[b] & _UP and moves[d] & _DOWN)
                ):
                    continue
                new = [cell for cell in (a, b, d) if not self.hidden[cell]]
                cost = (
                    sum(1 for cell in new if not self.values[cell]),
                    sum(self.values[cell] for cell in new),
                    len(new),
                )
                if best_cost is None or cost < best_cost:
                    best, best_cost = (a, b, d), cost
        return best

    # -- the check ------------------------------------------------------------------------------------------

    def weak_cells(self, *, directed: bool = True) -> list[int]:
        """Hidden cells on no directed cycle (the figures and bounds leave them one value), or with
        `directed=False` on no cycle at all (the figures alone give them back)."""
        n, m, hidden = self.n, self.m, self.hidden
        row_open = [left == 0 for left in self.row_left]
        column_open = [self.columns_bind and left == 0 for left in self.column_left]
        closed, opened = self.moves_closed, self.moves_open
        ups: list[int] = []  # by row, the columns where a hidden cell can go up
        downs: list[int] = []
        cells: list[tuple[int, int, int, int]] = []  # index, row, column, moves
        for row in range(n + 1):
            this_open = row_open[row]
            up = down = 0
            for column in range(m):
                index = row * m + column
                if hidden[index]:
                    if not directed:
                        moves = _UP | _DOWN
                    elif this_open or column_open[column]:
                        moves = opened[index]
                    else:
                        moves = closed[index]
                    if moves & _UP:
                        up |= 1 << column
                    if moves & _DOWN:
                        down |= 1 << column
                    cells.append((index, row, column, moves))
            ups.append(up)
            downs.append(down)
        if not self.columns_bind:
            # One line only, the totals row: a cycle is one cell going up and another going down.
            up_count, down_count = ups[0].bit_count(), downs[0].bit_count()
            return [
                index
                for index, _, column, moves in cells
                if not (
                    (moves & _UP and down_count - (downs[0] >> column & 1))
                    or (moves & _DOWN and up_count - (ups[0] >> column & 1))
                )
            ]
        # A path column -> row -> column' is a cell going down then one going up in the same row; with at
        # most a few columns, reachability between columns is a handful of bit operations.
        up_rows = [0] * m  # by column, the rows whose hidden cell there can go up
        down_rows = [0] * m
        for row in range(n + 1):
            bit = 1 << row
            for column in range(m):
                if ups[row] >> column & 1:
                    up_rows[column] |= bit
                if downs[row] >> column & 1:
                    down_rows[column] |= bit
        witnesses = [
            [(down_rows[a] & up_rows[b]).bit_count() if a != b else 0 for b in range(m)] for a in range(m)
        ]
        reach, reached_by = _closure([[count > 0 for count in line] for line in witnesses])
        robust_reach, robust_reached_by = _closure([[count > 1 for count in line] for line in witnesses])
        without_row: dict[tuple[int, int], tuple[list[int], list[int]]] = {}
        weak = []
        for index, row, column, moves in cells:
            up, down = ups[row], downs[row]
            if moves == _UP:
                # Back from the column to the row: any path will do, it cannot use the cell going up.
                safe = down & reach[column]
            elif moves == _DOWN:
                safe = up & reached_by[column]
            elif moves:
                # Both ways: a path back must leave this row alone, or it would only undo the cell itself.
                others_up, others_down = up & ~(1 << column), down & ~(1 << column)
                safe = others_down & robust_reach[column] or others_up & robust_reached_by[column]
                if not safe:
                    if (up, down) not in without_row:
                        without_row[(up, down)] = _closure(
                            [
                                [witnesses[a][b] - (down >> a & 1 and up >> b & 1) > 0 for b in range(m)]
                                for a in range(m)
                            ]
                        )
                    reach_without, reached_by_without = without_row[(up, down)]
                    safe = others_down & reach_without[column] or others_up & reached_by_without[column]
            else:
                safe = 0
            if not safe:
                weak.append(index)
        return weak


def _closure(edges: list[list[bool]]) -> tuple[list[int], list[int]]:
    """For each vertex of a small directed graph, the vertices it reaches and those reaching it (bit sets,
    itself included)."""
    count = len(edges)
    reach = [sum(1 << b for b in range(count) if edges[a][b]) | 1 << a for a in range(count)]
    for middle in range(count):
        bit, onward = 1 << middle, reach[middle]
        for a in range(count):
            if reach[a] & bit:
                reach[a] |= onward
    reached_by = [sum(1 << a for a in range(count) if reach[a] >> b & 1) for b in range(count)]
    return reach, reached_by
