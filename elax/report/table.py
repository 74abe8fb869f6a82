"""The summary table: every record placed in a (series, row) cell, rows being IMP levels or clusters of close
sparsities, and each cell's test accuracy averaged over seeds."""

import math
import statistics
from dataclasses import dataclass, field
from typing import NamedTuple

from elax.report.records import UNSTRUCTURED, describe, series_name
from elax.workdir import ETT, IMP

SPARSITY_DECIMALS = 4
# Tickets with no IMP level in the report share a row when their remaining weights differ by at most this
# fraction of the row's first (IMP levels at prune fraction 0.2 are 25% apart).
DEFAULT_TOLERANCE = 0.15


class Cell(NamedTuple):
    """Test accuracy (fraction in [0, 1]) over the replicates of one table cell,
    and `sparsity`, the mean sparsity of those replicates (which may differ
    from the row label)."""

    mean: float
    std: float
    n: int
    sparsity: float


class Series(NamedTuple):
    """What one series is (`records.describe` of its records), its recipe id (None in older runs), how many
    seeds it has, and for IMP `dense`: the mean test accuracy (fraction) of level 0, None without level 0."""

    method: str
    model: str
    source: str = ""
    strategy: str = ""
    structure: str = UNSTRUCTURED
    recipe: str | None = None
    seeds: int = 1
    dense: float | None = None


@dataclass(frozen=True)
class Table:
    """Summary table: `cells[(series, row)]`, `row` being a row label in `sparsities`; `info[series]`, its
    `Series` (empty in a table built by hand: labels then fall back to the series names).

    Series and row labels (ascending) are ordered as in `summarize`.
    """

    series: tuple
    sparsities: tuple
    cells: dict
    info: dict = field(default_factory=dict)

    def get(self, series, sparsity):
        """The Cell of `series` in the row labelled `sparsity`, or None when absent."""
        return self.cells.get((series, round(sparsity, SPARSITY_DECIMALS)))


def series_key(name):
    """Order: imp series first, then ett, then the rest alphabetically."""
    method = name.split(" ", 1)[0]
    rank = {IMP: 0, ETT: 1}.get(method, 2)
    return (rank, name)


def summarize(records, *, tolerance=DEFAULT_TOLERANCE):
    """Groups records into (series, row) cells and averages over seeds.

    Rows are IMP levels: every IMP sparsity (rounded to 4 decimals) labels a row of its own, but one level of
    IMP runs of several models (a weight or so apart) shares the row of the lowest, within `tolerance`. Any other ticket
    joins the row of the IMP level it comes from, its `level` (ETT: the source level; baselines: the reference
    level), nearest in remaining weights when several IMP runs have that level; its cell notes its own sparsity
    when it differs (ETT copies block masks, so 87.50% becomes 88.69%). Tickets whose level has no IMP record
    in the report form rows of their own: ascending, each within `tolerance` (relative difference in remaining
    weights) of its row's first sparsity; tolerance 0 gives one row per distinct sparsity.

    Each cell holds mean and population std (ddof=0, so 0 for one replicate)
    of test_accuracy, n, the number of records, and `sparsity`, their mean
    sparsity (4 decimals). Records of one non-IMP series at different
    sparsities in one row (possible with a large `tolerance`) are aggregated
    into one cell.
    Rows ascend; series are ordered imp, then ett, then the rest alphabetically. `info` describes each series
    (`Series`: what it is, its seeds, IMP's dense accuracy).
    """
    groups, placed = {}, place(records, tolerance)
    for name, row, record in placed:
        group = groups.setdefault((name, row), ([], []))
        group[0].append(float(record["test_accuracy"]))
        group[1].append(float(record["sparsity"]))
    cells = {
        key: Cell(statistics.fmean(accs), statistics.pstdev(accs), len(accs),
                  round(statistics.fmean(sparsities), SPARSITY_DECIMALS))
        for key, (accs, sparsities) in groups.items()
    }
    series = tuple(sorted({s for s, _ in cells}, key=series_key))
    return Table(series, tuple(sorted({label for _, label in cells})), cells, _series_info(placed))


def _series_info(placed):
    """{series name: Series} of `place`'s output."""
    records_of = {}
    for name, _, record in placed:
        records_of.setdefault(name, []).append(record)
    return {name: _series(records) for name, records in records_of.items()}


def _series(records):
    """The Series of one series' records (which share method, models, strategy and structure by their name)."""
    first = records[0]
    dense = [float(r["test_accuracy"]) for r in records if first["method"] == IMP and r["level"] == 0]
    return Series(*describe(first), recipe=first.get("recipe_id"), seeds=len({r["seed"] for r in records}),
                  dense=statistics.fmean(dense) if dense else None)


def place(records, tolerance=DEFAULT_TOLERANCE):
    """[(series name, row label, record)]: the series and row of every record, as `summarize` describes."""
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance!r}")
    with_recipe = len({r.get("recipe_id") for r in records}) > 1  # never average across recipes
    records = [(series_name(r, with_recipe), round(float(r["sparsity"]), SPARSITY_DECIMALS), r)
               for r in records]
    imp_levels = {}
    for _, p, r in records:
        if r["method"] == IMP:
            imp_levels.setdefault(r["level"], set()).add(p)
    # One level of IMP runs of two models lands a weight or so apart (60.00% and 60.01%): one row, or ETT (in its
    # source's row) would meet neither the target's IMP level nor its baselines there.
    clusters = {level: _clusters(ps, tolerance) for level, ps in imp_levels.items()}
    imp_rows = {(level, p): label for level, labels in clusters.items() for p, label in labels.items()}
    imp_levels = {level: set(labels.values()) for level, labels in clusters.items()}
    is_loose = lambda r: r["method"] != IMP and r["level"] not in imp_levels
    loose = _clusters({p for _, p, r in records if is_loose(r)}, tolerance)

    def row(p, r):
        if r["method"] == IMP:
            return imp_rows[r["level"], p]
        if is_loose(r):
            return loose[p]
        return min(imp_levels[r["level"]], key=lambda a: _gap(p, a))

    return [(name, row(sparsity, record), record) for name, sparsity, record in records]


def _gap(a, b):
    """Distance of two sparsities in remaining weights, relative: |log((1 - a) / (1 - b))|."""
    return abs(math.log((1.0 - a) / (1.0 - b)))


def _clusters(sparsities, tolerance):
    """{sparsity: row label}: ascending rows, each within `tolerance` (relative remaining weights) of its first."""
    limit = math.log1p(tolerance) + 1e-12  # the epsilon keeps float noise from splitting boundary cases
    labels, first = {}, None
    for p in sorted(sparsities):
        if first is None or _gap(p, first) > limit:
            first = p
        labels[p] = first
    return labels
