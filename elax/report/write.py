"""Writing a report folder: report.md (table, plot link, claims), results.csv and the plot."""

from pathlib import Path

from elax.report.comparisons import claims, claims_markdown
from elax.report.formats import to_csv, to_markdown
from elax.report.plotting import PLOT_FILE, plot
from elax.report.records import load_records
from elax.report.table import DEFAULT_TOLERANCE, summarize


def write_report(paths, out_dir, title=None, tolerance=DEFAULT_TOLERANCE, mix_recipes=False):
    """Writes report.md, results.csv and the plot to `out_dir`; returns the markdown.

    `tolerance` groups sparsities into rows as in `summarize`.
    """
    records = load_records(paths, mix_recipes)
    table = summarize(records, tolerance=tolerance)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown = to_markdown(table)
    heading = f"# {title}\n\n" if title else ""
    (out_dir / "report.md").write_text(
        f"{heading}{markdown}\n![accuracy vs sparsity]({PLOT_FILE})\n\n## Claims\n\n"
        f"{claims_markdown(claims(records, tolerance))}")
    (out_dir / "results.csv").write_text(to_csv(table))
    plot(table, out_dir / PLOT_FILE, title=title)
    return markdown
