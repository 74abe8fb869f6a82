"""The summary table as text: markdown (cells formatted by `format_cell`) and CSV, and the records as a per-seed
CSV. CSVs give accuracies in percent with 2 decimals and sparsities as fractions with 4 (float32 records would
otherwise print 0.20000000298)."""

import csv
import io

from elax.report.labels import series_labels
from elax.report.records import describe
from elax.report.table import DEFAULT_TOLERANCE, SPARSITY_DECIMALS, place, series_key

# What a series or record is, in the CSVs: records.describe's fields.
DESCRIBE_COLUMNS = ("method", "model", "source", "strategy", "structure")
CSV_COLUMNS = ("series", "label", *DESCRIBE_COLUMNS, "sparsity", "row_sparsity", "test_accuracy_mean_pct",
               "test_accuracy_std_pct", "n")
SEED_CSV_COLUMNS = ("series", *DESCRIBE_COLUMNS, "seed", "level", "sparsity", "row_sparsity", "test_accuracy_pct")

# A cell whose own sparsity is further than this from its row label says so.
SPARSITY_NOTE_THRESHOLD = 0.0005


def format_cell(cell, row_sparsity=None):
    """Accuracy in percent: '92.48 ± 0.31 (n=3)', or just '92.48' when n == 1.

    When the cell's own sparsity is more than 0.0005 from `row_sparsity`, it
    is noted in percent: '92.48 ± 0.31 (n=3, at 20.49%)', '97.78 (at 20.49%)'.
    """
    if cell is None:
        return ""
    notes = [] if cell.n == 1 else [f"n={cell.n}"]
    if (row_sparsity is not None and round(abs(cell.sparsity - row_sparsity),
                                           SPARSITY_DECIMALS) > SPARSITY_NOTE_THRESHOLD):
        notes.append(f"at {100 * cell.sparsity:.2f}%")
    text = f"{100 * cell.mean:.2f}"
    if cell.n > 1:
        text += f" ± {100 * cell.std:.2f}"
    return f"{text} ({', '.join(notes)})" if notes else text


def md_row(cells):
    """One markdown table line of `cells`."""
    # A '|' inside a series name would otherwise split the column.
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def to_markdown(table):
    """Markdown table: sparsity %, remaining %, then one column per series, headed by its label.

    One line per row label of `table`. Cells are test accuracy in percent,
    formatted by `format_cell` (which notes a cell's own sparsity when it is
    off the label); a cell is empty where its series has no result in that row.
    """
    names = series_labels(table)
    header = ["sparsity %", "remaining %", *(names[s] for s in table.series)]
    lines = [md_row(header), "|" + "|".join("---:" for _ in header) + "|"]
    for sparsity in table.sparsities:
        row = [f"{100 * sparsity:.2f}", f"{100 * (1 - sparsity):.2f}"]
        row += [format_cell(table.get(s, sparsity), sparsity) for s in table.series]
        lines.append(md_row(row))
    return "\n".join(lines) + "\n"


def to_csv(table):
    """CSV of `CSV_COLUMNS`, one line per cell, in series order, then ascending row.

    `series` is the machine-readable name, `label` the figure's; method, model, source (ETT's source model),
    strategy and structure say what the series is (source and strategy empty but for ETT). `sparsity` is the
    cell's own mean sparsity, `row_sparsity` the label of its markdown row; the test accuracy's mean and
    population std over the cell's `n` records, in percent (std empty for n = 1: one record has no spread).
    """
    names = series_labels(table)
    rows = []
    for series in table.series:
        described = _describe_series(table, series)
        for row in table.sparsities:
            cell = table.get(series, row)
            if cell is not None:
                std = _percent(cell.std) if cell.n > 1 else ""
                rows.append([series, names[series], *described, _fraction(cell.sparsity), _fraction(row),
                             _percent(cell.mean), std, cell.n])
    return _csv(CSV_COLUMNS, rows)


def to_seed_csv(records, tolerance=DEFAULT_TOLERANCE):
    """CSV of `SEED_CSV_COLUMNS`, one line per record (the numbers behind `to_csv`), in series order, then
    ascending row, level and seed; `row_sparsity` is the row `summarize` puts the record in."""
    placed = sorted(place(records, tolerance), key=lambda p: (series_key(p[0]), p[1], p[2]["level"], p[2]["seed"]))
    return _csv(SEED_CSV_COLUMNS, [
        [name, *describe(r), r["seed"], r["level"], _fraction(r["sparsity"]), _fraction(row),
         _percent(r["test_accuracy"])] for name, row, r in placed])


def _describe_series(table, series):
    """The DESCRIBE_COLUMNS of a series; empty in a table built by hand."""
    info = table.info.get(series)
    return [getattr(info, column) if info else "" for column in DESCRIBE_COLUMNS]


def _percent(fraction):
    return f"{100 * float(fraction):.2f}"


def _fraction(value):
    return f"{float(value):.{SPARSITY_DECIMALS}f}"


def _csv(columns, rows):
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return out.getvalue()
