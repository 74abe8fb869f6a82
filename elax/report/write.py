"""Writing a report folder: report.md (table, plot link, claims), results.csv (a line per cell),
results_per_seed.csv (a line per record) and the plot (PNG, PDF, SVG)."""

from pathlib import Path

from elax.report.comparisons import claims, claims_markdown
from elax.report.formats import to_csv, to_markdown, to_seed_csv
from elax.report.labels import series_labels
from elax.report.plotting import PLOT_FILE, check_ylim, plot, plot_paths
from elax.report.records import load_records
from elax.report.table import DEFAULT_TOLERANCE, summarize

MARKDOWN_FILE, CSV_FILE, SEED_CSV_FILE = "report.md", "results.csv", "results_per_seed.csv"
REPORT_FILES = (MARKDOWN_FILE, CSV_FILE, SEED_CSV_FILE, *(p.name for p in plot_paths(PLOT_FILE)))


def write_report(paths, out_dir, title=None, tolerance=DEFAULT_TOLERANCE, mix_recipes=False, ylim=None):
    """Writes REPORT_FILES to `out_dir`; returns the markdown table.

    `tolerance` groups sparsities into rows as in `summarize`; `ylim` (low, high, in percent) overrides the
    plot's y-range (`plotting.y_range`).
    """
    if ylim is not None:
        ylim = check_ylim(ylim)  # before anything is written
    records = load_records(paths, mix_recipes)
    table = summarize(records, tolerance=tolerance)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown = to_markdown(table)
    heading = f"# {title}\n\n" if title else ""
    claims_text = claims_markdown(claims(records, tolerance), series_labels(table))
    # UTF-8 whatever the locale: labels and claims hold '→', '±' and '−'.
    (out_dir / MARKDOWN_FILE).write_text(
        f"{heading}{markdown}\n![accuracy vs sparsity]({PLOT_FILE})\n\n## Claims\n\n{claims_text}", encoding="utf-8")
    (out_dir / CSV_FILE).write_text(to_csv(table), encoding="utf-8")
    (out_dir / SEED_CSV_FILE).write_text(to_seed_csv(records, tolerance), encoding="utf-8")
    plot(table, out_dir / PLOT_FILE, title=title, ylim=ylim)
    return markdown
