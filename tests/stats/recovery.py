"""What a reader can work out of the hidden cells of a published statistics answer: the tests' adversary.

Independent of app.stats.disclosure on purpose: plain linear algebra over the rationals, no graph.

A published answer is the breakdown rows with `None` for hidden cells, the exact row totals, the totals row
with `None`s and the exact grand total. The reader's equations: each row adds up to its total, the totals row
to the grand total and, when there are items, each column of items to its totals cell.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fractions import Fraction

Cell = tuple[int | None, str]  # (row index, or None for the totals row; column)
Equation = tuple[dict[int, Fraction], Fraction]  # coefficients by unknown, right-hand side


def equations(
    published_rows: Sequence[Mapping[str, int | None]],
    row_totals: Sequence[int],
    published_totals: Mapping[str, int | None],
    grand_total: int,
) -> tuple[list[Cell], list[Equation]]:
    """The hidden cells (the unknowns, in reading order, totals last) and the equations over them."""
    columns = list(published_totals)
    unknowns: list[Cell] = []
    position: dict[Cell, int] = {}

    def unknown(cell: Cell) -> int:
        position[cell] = len(unknowns)
        unknowns.append(cell)
        return position[cell]

    system: list[Equation] = []
    lines: list[tuple[int | None, Mapping[str, int | None], int]] = [
        (row, values, total)
        for row, (values, total) in enumerate(zip(published_rows, row_totals, strict=True))
    ]
    lines.append((None, published_totals, grand_total))
    for row, values, total in lines:
        coefficients: dict[int, Fraction] = {}
        rest = Fraction(total)
        for column in columns:
            value = values[column]
            if value is None:
                coefficients[unknown((row, column))] = Fraction(1)
            else:
                rest -= value
        system.append((coefficients, rest))
    if published_rows:
        for column in columns:
            # sum of the items' cells - totals cell = 0
            coefficients = {}
            rest = Fraction(0)
            for row, values in enumerate(published_rows):
                value = values[column]
                if value is None:
                    coefficients[position[(row, column)]] = Fraction(1)
                else:
                    rest -= value
            total = published_totals[column]
            if total is None:
                coefficients[position[(None, column)]] = Fraction(-1)
            else:
                rest += total
            system.append((coefficients, rest))
    return unknowns, system


def _reduced(system: list[Equation]) -> list[tuple[int, dict[int, Fraction], Fraction]]:
    """Gauss-Jordan elimination: (pivot, row, right-hand side) with each pivot absent from the other rows."""
    reduced: list[tuple[int, dict[int, Fraction], Fraction]] = []
    for coefficients, rest in system:
        row = dict(coefficients)
        for pivot, pivot_row, pivot_rest in reduced:
            factor = row.get(pivot)
            if factor:
                for variable, coefficient in pivot_row.items():
                    row[variable] = row.get(variable, Fraction(0)) - factor * coefficient
                rest -= factor * pivot_rest
        row = {variable: coefficient for variable, coefficient in row.items() if coefficient}
        if not row:
            continue  # a consequence of the equations before it
        pivot = min(row)
        scale = row[pivot]
        row = {variable: coefficient / scale for variable, coefficient in row.items()}
        rest /= scale
        for position, (other, other_row, other_rest) in enumerate(reduced):
            factor = other_row.get(pivot)
            if factor:
                updated = dict(other_row)
                for variable, coefficient in row.items():
                    updated[variable] = updated.get(variable, Fraction(0)) - factor * coefficient
                updated = {variable: coefficient for variable, coefficient in updated.items() if coefficient}
                reduced[position] = (other, updated, other_rest - factor * rest)
        reduced.append((pivot, row, rest))
    return reduced


def recover(
    published_rows: Sequence[Mapping[str, int | None]],
    row_totals: Sequence[int],
    published_totals: Mapping[str, int | None],
    grand_total: int,
) -> dict[Cell, Fraction]:
    """Every hidden cell a combination of the published figures gives back, with its value.

    A unit vector lies in the row space of a reduced row echelon form exactly when it is one of its rows
    (the coefficient of each row in a combination is the combination's entry at that row's pivot)."""
    unknowns, system = equations(published_rows, row_totals, published_totals, grand_total)
    found = {
        unknowns[pivot]: rest
        for pivot, row, rest in _reduced(system)
        if len(row) == 1  # the pivot's own coefficient, 1, alone
    }
    return {cell: found[cell] for cell in unknowns if cell in found}


def recoverable_cells(
    published_rows: Sequence[Mapping[str, int | None]],
    row_totals: Sequence[int],
    published_totals: Mapping[str, int | None],
    grand_total: int,
) -> list[tuple[int | None, str]]:
    """The hidden cells given back by adding and subtracting published figures; [] when the answer is safe."""
    return list(recover(published_rows, row_totals, published_totals, grand_total))


# -- bounds: the same equations, and what the reader knows of each hidden cell -----------------------------


def pinned_cells(
    published_rows: Sequence[Mapping[str, int | None]],
    row_totals: Sequence[int],
    published_totals: Mapping[str, int | None],
    grand_total: int,
    lower: Mapping[Cell, int],
    upper: Mapping[Cell, int | None],
) -> list[Cell]:
    """The hidden cells that take one value only over the solutions within `lower` and `upper` (None: no
    upper bound).

    Exact linear programming: the smallest and the largest value of each cell. The equations with bounds are
    totally unimodular, so both extremes are integers and every integer between them is some solution's. A
    cell that differs between two solutions found along the way needs no programme of its own."""
    unknowns, system = equations(published_rows, row_totals, published_totals, grand_total)
    polytope = _Polytope(system, [lower[cell] for cell in unknowns], [upper[cell] for cell in unknowns])
    first = polytope.solution()
    moving: set[int] = set()
    pinned = []
    for variable, cell in enumerate(unknowns):
        for highest in (True, False):
            if variable in moving:
                break
            other = polytope.extreme(variable, highest=highest)
            if other is None:  # unbounded: certainly not one value
                moving.add(variable)
                break
            moving.update(j for j in range(len(unknowns)) if other[j] != first[j])
        if variable not in moving:
            pinned.append(cell)
    return pinned


class _Polytope:
    """{y : equations, lower <= y <= upper}, written x = y - lower >= 0 with a slack for each upper bound,
    and a feasible basis found once (phase one of the simplex method, Bland's rule, exact)."""

    def __init__(self, system: list[Equation], lower: list[int], upper: list[int | None]) -> None:
        count = len(lower)
        self.count = count
        self.lower = lower
        bounded = [variable for variable in range(count) if upper[variable] is not None]
        width = count + len(bounded)
        rows: list[dict[int, Fraction]] = []
        rests: list[Fraction] = []
        for coefficients, rest in system:
            rows.append(dict(coefficients))
            rests.append(rest - sum((c * lower[v] for v, c in coefficients.items()), Fraction(0)))
        for slack, variable in enumerate(bounded):
            high = upper[variable]
            assert high is not None
            rows.append({variable: Fraction(1), count + slack: Fraction(1)})
            rests.append(Fraction(high - lower[variable]))
        self.rhs = width + len(rows)  # the column of the right-hand side
        self.tableau: list[list[Fraction]] = []
        for position, (row, rest) in enumerate(zip(rows, rests, strict=True)):
            sign = -1 if rest < 0 else 1
            line = [Fraction(0)] * (self.rhs + 1)
            for variable, coefficient in row.items():
                line[variable] = sign * coefficient
            line[width + position] = Fraction(1)  # the artificial variable of this row
            line[self.rhs] = sign * rest
            self.tableau.append(line)
        self.basis = [width + position for position in range(len(rows))]
        self.allowed = self.rhs
        if self._minimise({width + position: Fraction(1) for position in range(len(rows))}) != 0:
            raise ValueError("the published figures and the bounds contradict each other")
        # Artificial variables left in the basis at zero: pivot them out, or drop their (redundant) row.
        for position in reversed(range(len(self.basis))):
            if self.basis[position] >= width:
                line = self.tableau[position]
                entering = next((j for j in range(width) if line[j] != 0), None)
                if entering is None:
                    del self.tableau[position]
                    del self.basis[position]
                else:
                    self._pivot(position, entering)
        self.allowed = width

    def _pivot(self, position: int, entering: int) -> None:
        line = self.tableau[position]
        scale = line[entering]
        if scale != 1:
            line[:] = [value / scale for value in line]
        nonzero = [j for j, value in enumerate(line) if value]
        for other_position, other in enumerate(self.tableau):
            factor = other[entering]
            if other_position != position and factor:
                for j in nonzero:
                    other[j] -= factor * line[j]
        self.basis[position] = entering

    def _minimise(self, cost: dict[int, Fraction]) -> Fraction | None:
        """Bland's rule from the current basis; the minimum, or None when unbounded below."""
        while True:
            reduced = [Fraction(0)] * self.allowed
            for variable, weight in cost.items():
                if variable < self.allowed:
                    reduced[variable] += weight
            for position, variable in enumerate(self.basis):
                weight = cost.get(variable)
                if weight:
                    line = self.tableau[position]
                    for j in range(self.allowed):
                        if line[j]:
                            reduced[j] -= weight * line[j]
            entering = next((j for j in range(self.allowed) if reduced[j] < 0), None)
            if entering is None:
                return sum(
                    (
                        cost.get(variable, Fraction(0)) * self.tableau[position][self.rhs]
                        for position, variable in enumerate(self.basis)
                    ),
                    Fraction(0),
                )
            candidates = [
                (line[self.rhs] / line[entering], self.basis[position], position)
                for position, line in enumerate(self.tableau)
                if line[entering] > 0
            ]
            if not candidates:
                return None
            self._pivot(min(candidates)[2], entering)

    def solution(self) -> list[Fraction]:
        """The current basic solution, in the cells' own values."""
        values = [Fraction(bound) for bound in self.lower]
        for position, variable in enumerate(self.basis):
            if variable < self.count:
                values[variable] += self.tableau[position][self.rhs]
        return values

    def extreme(self, variable: int, *, highest: bool) -> list[Fraction] | None:
        """A solution where the cell is at its largest (or smallest); None when it has no largest."""
        saved = ([list(line) for line in self.tableau], list(self.basis))
        try:
            if self._minimise({variable: Fraction(-1 if highest else 1)}) is None:
                return None
            return self.solution()
        finally:
            self.tableau, self.basis = saved
