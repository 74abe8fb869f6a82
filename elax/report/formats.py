"""The summary table as text: markdown (cells formatted by `format_cell`) and CSV."""

import csv
import io

from elax.report.table import SPARSITY_DECIMALS

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
    """Markdown table: sparsity %, remaining %, then one column per series.

    One line per row label of `table`. Cells are test accuracy in percent,
    formatted by `format_cell` (which notes a cell's own sparsity when it is
    off the label); a cell is empty where its series has no result in that row.
    """
    header = ["sparsity %", "remaining %", *table.series]
    lines = [md_row(header), "|" + "|".join("---:" for _ in header) + "|"]
    for sparsity in table.sparsities:
        row = [f"{100 * sparsity:.2f}", f"{100 * (1 - sparsity):.2f}"]
        row += [format_cell(table.get(s, sparsity), sparsity) for s in table.series]
        lines.append(md_row(row))
    return "\n".join(lines) + "\n"


def to_csv(table):
    """CSV with columns series, sparsity, row_sparsity, mean, std, n (fractions).

    One line per cell: `sparsity` is the cell's own mean sparsity and
    `row_sparsity` the label of its markdown row. Lines follow the series
    order, then ascending row.
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["series", "sparsity", "row_sparsity", "mean", "std", "n"])
    for series in table.series:
        for row in table.sparsities:
            cell = table.get(series, row)
            if cell is not None:
                writer.writerow([series, cell.sparsity, row, cell.mean, cell.std, cell.n])
    return out.getvalue()
