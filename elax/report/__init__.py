"""Summaries of lottery-ticket runs: markdown and CSV tables and an accuracy plot.

Reads the `results.json` files that runs write (a JSON list of records, one
per trained ticket), averages test accuracy over seeds for each series and
row of close sparsities (see `summarize`), and writes a report:

    python -m elax.report RUN_DIR... --out DIR [--title T] [--tolerance TOL] [--ylim LOW,HIGH]

The folder holds report.md (table and claims), results.csv (a line per cell), results_per_seed.csv (a line per
record) and accuracy_vs_sparsity.png with its .pdf and .svg. Figures and tables name series by readable labels
('IMP ResNet-20', 'ETT ResNet-14 → 20 (append)', 'Random'; see `elax.report.labels`); the CSVs keep the
machine-readable series names beside them.

Runs of different recipes (`workdir.recipe_id`) are never averaged together: a report of several recipes is
refused, naming the keys that differ, unless `mix_recipes` (`--mix-recipes`) is given, and then every series
name carries its recipe id.

Modules, each using only those before it: records (load and check results.json), table (summarize into cells),
labels (readable names, source and target models), formats (markdown, CSVs), comparisons (claims), plotting (the
figure; matplotlib imported when drawing), write (the report folder), cli (the command line); metrics
(`load_metrics`: the per-epoch metrics lines of runs as rows) stands apart. Importing the package loads only the
standard library and elax.workdir.
"""

from elax.report.cli import main
from elax.report.comparisons import Claim, claims, claims_markdown
from elax.report.formats import (CSV_COLUMNS, SEED_CSV_COLUMNS, SPARSITY_NOTE_THRESHOLD, format_cell, to_csv,
                                 to_markdown, to_seed_csv)
from elax.report.labels import method_label, model_label, series_label, series_labels, sources, targets
from elax.report.metrics import load_metrics, run_name
from elax.report.plotting import (LEGEND_ROW_INCHES, PLOT_FILE, PLOT_FORMATS, dense_lines, figure, plot, plot_title,
                                  series_styles, y_range)
from elax.report.records import REQUIRED_KEYS, UNSTRUCTURED, load_records, series_name
from elax.report.table import DEFAULT_TOLERANCE, SPARSITY_DECIMALS, Cell, Series, Table, place, summarize
from elax.report.write import REPORT_FILES, write_report

__all__ = [
    "CSV_COLUMNS", "Cell", "Claim", "DEFAULT_TOLERANCE", "LEGEND_ROW_INCHES", "PLOT_FILE", "PLOT_FORMATS",
    "REPORT_FILES", "REQUIRED_KEYS", "SEED_CSV_COLUMNS", "SPARSITY_DECIMALS", "SPARSITY_NOTE_THRESHOLD", "Series",
    "Table", "UNSTRUCTURED", "claims", "claims_markdown", "dense_lines", "figure", "format_cell", "load_metrics",
    "load_records", "main", "method_label", "model_label", "place", "plot", "plot_title", "run_name", "series_label",
    "series_labels", "series_name", "series_styles", "sources", "summarize", "targets", "to_csv", "to_markdown",
    "to_seed_csv", "write_report", "y_range",
]
