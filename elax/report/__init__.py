"""Summaries of lottery-ticket runs: markdown and CSV tables and an accuracy plot.

Reads the `results.json` files that runs write (a JSON list of records, one
per trained ticket), averages test accuracy over seeds for each series and
row of close sparsities (see `summarize`), and writes a report:

    python -m elax.report RUN_DIR... --out DIR [--title T] [--tolerance TOL]

Runs of different recipes (`workdir.recipe_id`) are never averaged together: a report of several recipes is
refused, naming the keys that differ, unless `mix_recipes` (`--mix-recipes`) is given, and then every series
name carries its recipe id.

Modules, each using only those before it: records (load and check results.json), table (summarize into cells),
formats (markdown, CSV), comparisons (claims), plotting (the PNG; matplotlib imported when drawing), write
(the report folder), cli (the command line). Importing the package loads only the standard library and
elax.workdir.
"""

from elax.report.cli import main
from elax.report.comparisons import Claim, claims, claims_markdown
from elax.report.formats import SPARSITY_NOTE_THRESHOLD, format_cell, to_csv, to_markdown
from elax.report.plotting import LEGEND_ROW_INCHES, PLOT_FILE, figure, plot, plot_title
from elax.report.records import REQUIRED_KEYS, load_records, series_name
from elax.report.table import DEFAULT_TOLERANCE, SPARSITY_DECIMALS, Cell, Table, place, summarize
from elax.report.write import write_report

__all__ = [
    "Cell", "Claim", "DEFAULT_TOLERANCE", "LEGEND_ROW_INCHES", "PLOT_FILE", "REQUIRED_KEYS", "SPARSITY_DECIMALS",
    "SPARSITY_NOTE_THRESHOLD", "Table", "claims", "claims_markdown", "figure", "format_cell", "load_records", "main",
    "place", "plot", "plot_title", "series_name", "summarize", "to_csv", "to_markdown", "write_report",
]
