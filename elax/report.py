"""Summaries of lottery-ticket runs: markdown and CSV tables and an accuracy plot.

Reads the `results.json` files that runs write (a JSON list of records, one
per trained ticket), averages test accuracy over seeds for each series and
row of close sparsities (see `summarize`), and writes a report:

    python -m elax.report RUN_DIR... --out DIR [--title T] [--tolerance TOL]

Runs of different recipes (`workdir.recipe_id`) are never averaged together: a report of several recipes is
refused, naming the keys that differ, unless `mix_recipes` (`--mix-recipes`) is given, and then every series
name carries its recipe id.

Only the standard library is imported at module level (elax.workdir is standard library only); matplotlib is
imported inside `plot` so that `import elax.report` stays fast.
"""

import argparse
import csv
import io
import json
import math
import statistics
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from elax import workdir as wd
from elax.workdir import ETT, ETT_KEYS, IMP, RESULTS_FILE

# The record keys a report needs (records of older runs lack some of workdir.RECORD_KEYS).
REQUIRED_KEYS = ("level", "sparsity", "test_accuracy", "model", "method", "seed")
SPARSITY_DECIMALS = 4
# Tickets with no IMP level in the report share a row when their remaining weights differ by at most this
# fraction of the row's first (IMP levels at prune fraction 0.2 are 25% apart).
DEFAULT_TOLERANCE = 0.15
# A cell whose own sparsity is further than this from its row label says so.
SPARSITY_NOTE_THRESHOLD = 0.0005
PLOT_FILE = "accuracy_vs_sparsity.png"


class Cell(NamedTuple):
    """Test accuracy (fraction in [0, 1]) over the replicates of one table cell,
    and `sparsity`, the mean sparsity of those replicates (which may differ
    from the row label)."""

    mean: float
    std: float
    n: int
    sparsity: float


@dataclass(frozen=True)
class Table:
    """Summary table: `cells[(series, row)]`, `row` being a row label in `sparsities`.

    Series and row labels (ascending) are ordered as in `summarize`.
    """

    series: tuple
    sparsities: tuple
    cells: dict

    def get(self, series, sparsity):
        """The Cell of `series` in the row labelled `sparsity`, or None when absent."""
        return self.cells.get((series, round(sparsity, SPARSITY_DECIMALS)))


# ----------------------------------------------------------------------------
# Loading.


def _find_results(path):
    """The results.json files that `path` (file, run dir or tree of runs) names."""
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        found = sorted(path.rglob(RESULTS_FILE))
        if found:
            return found
        raise FileNotFoundError(f"no {RESULTS_FILE} found in or under {path}")
    raise FileNotFoundError(f"no such file or directory: {path}")


def _validate(record, file, index):
    """Raises ValueError naming `file` when `record` lacks a key or is out of range."""
    if not isinstance(record, dict):
        raise ValueError(f"{file}: record {index} is not a JSON object")
    keys = REQUIRED_KEYS + (ETT_KEYS if record.get("method") == ETT else ())
    for key in keys:
        if key not in record:
            raise ValueError(f"{file}: record {index} is missing required key {key!r}")
    # Fractions, not percentages; sparsity 1 would mean 0% remaining, which the log-scale plot cannot show.
    for key, top in (("sparsity", ")"), ("test_accuracy", "]")):
        value = record[key]
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not (number and (0 <= value < 1 or top == "]" and value == 1)):
            raise ValueError(f"{file}: record {index} has {key} {value!r} outside [0, 1{top} (a fraction); the "
                             "file is damaged or was edited: restore it, or delete it and run that run's command "
                             "again to rebuild it")


def _read_results(file):
    """The validated records of one results.json file."""
    try:
        records = json.loads(Path(file).read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{file}: invalid JSON: {e}") from e
    if not isinstance(records, list):
        raise ValueError(f"{file}: expected a JSON list of records")
    for i, record in enumerate(records):
        _validate(record, file, i)
    return records


def load_records(paths, mix_recipes=False):
    """Records from run dirs, results.json files, or dirs holding several runs.

    A file reached through two of `paths` (say a run and its parent) is read once.
    Raises FileNotFoundError when a path holds no results.json, and ValueError
    naming the file and key when a record lacks a required key, or naming the
    differing keys when the runs have different recipes (unless `mix_recipes`).
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    records, seen, files_of_recipe, file_of_result = [], set(), {}, {}
    for path in paths:
        for file in _find_results(path):
            if file.resolve() not in seen:
                seen.add(file.resolve())
                for record in _read_results(file):
                    records.append(record)
                    files_of_recipe.setdefault(record.get("recipe_id"), file)
                    _check_not_twice(record, file, file_of_result, mix_recipes)
    if len(files_of_recipe) > 1 and not mix_recipes:
        raise ValueError(_mixed_recipes_message(files_of_recipe))
    if not records:
        raise ValueError(f"{', '.join(map(str, paths))}: no finished levels yet (every results.json found is "
                         "empty). Report runs once they have finished a level.")
    return records


def _check_not_twice(record, file, file_of_result, mix_recipes):
    """Two records of one series, level and seed from two files are one run read twice (a copy, or two runs with
    the same seed): averaged, they would pass for two replicates."""
    key = (series_name(record, with_recipe=mix_recipes), record["level"], record.get("seed"))
    other = file_of_result.setdefault(key, file)
    if other != file:
        raise ValueError(f"{other} and {file} both hold level {record['level']} of {key[0]} with seed {key[2]}: "
                         "averaged they would pass for two replicates. Report one of them (runs of other seeds "
                         "differ in --config.seed).")


def _mixed_recipes_message(files_of_recipe):
    (id_a, file_a), (id_b, file_b) = list(files_of_recipe.items())[:2]
    config_a = wd.read_json(str(file_a.parent / wd.CONFIG_FILE))
    config_b = wd.read_json(str(file_b.parent / wd.CONFIG_FILE))
    if config_a is not None and config_b is not None:
        differences = "; ".join(wd.recipe_differences(config_a, config_b)) or "no recipe key"
    else:
        differences = "unknown: a run has no config.json"
    return (f"the runs have {len(files_of_recipe)} different recipes, which are never averaged together: "
            f"{file_a} has recipe {id_a}, {file_b} has {id_b} (they differ in {differences}). Report runs of one "
            "recipe, or pass --mix-recipes to show each recipe as series of its own.")


# ----------------------------------------------------------------------------
# Summaries.


def series_name(record, with_recipe=False):
    """Line/column label, e.g. 'imp (cifar_resnet_32)' or
    'ett cifar_resnet_20→cifar_resnet_32 (append)'; `with_recipe` appends ' [recipe <id>]'."""
    method, model = record["method"], record["model"]
    if method == ETT:
        name = f"ett {record['source_model']}→{model} ({record['strategy']})"
    else:
        name = f"{method} ({model})"
    return name + (f" [recipe {record.get('recipe_id')}]" if with_recipe else "")


def _series_key(name):
    """Order: imp series first, then ett, then the rest alphabetically."""
    method = name.split(" ", 1)[0]
    rank = {IMP: 0, ETT: 1}.get(method, 2)
    return (rank, name)


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
    Rows ascend; series are ordered imp, then ett, then the rest alphabetically.
    """
    groups = {}
    for name, row, record in place(records, tolerance):
        group = groups.setdefault((name, row), ([], []))
        group[0].append(float(record["test_accuracy"]))
        group[1].append(float(record["sparsity"]))
    cells = {
        key: Cell(statistics.fmean(accs), statistics.pstdev(accs), len(accs),
                  round(statistics.fmean(sparsities), SPARSITY_DECIMALS))
        for key, (accs, sparsities) in groups.items()
    }
    series = tuple(sorted({s for s, _ in cells}, key=_series_key))
    return Table(series, tuple(sorted({label for _, label in cells})), cells)


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


# ----------------------------------------------------------------------------
# Claims: E-LTH's comparisons, computed from the numbers.


class Claim(NamedTuple):
    """ETT series `ett` minus series `other` in one row, paired by seed: mean and sample std (ddof=1) of the
    per-seed differences in test accuracy (fractions), over the `n` seeds both have, and how many of those seeds
    have ETT above (`above`) and below (`below`) the other. `exceeds_spread`: |mean| is larger than the std
    (with one seed there is no spread to compare, so False)."""

    row: float
    ett: str
    other: str
    mean: float
    std: float
    n: int
    above: int
    below: int

    @property
    def exceeds_spread(self) -> bool:
        return self.n > 1 and abs(self.mean) > self.std


def claims(records, tolerance=DEFAULT_TOLERANCE):
    """For every row and ETT series: ETT minus the target's own IMP series, minus each other ETT series of the same
    target model (another strategy or source: each pair once, in table order) and minus each baseline series of
    that model, paired by seed (see `Claim`). Rows ascend; within a row, IMP first, then ETT, then baselines."""
    placed = place(records, tolerance)
    by_cell, model_of, method_of = {}, {}, {}
    for name, row, record in placed:
        by_cell.setdefault((name, row), {})[record["seed"]] = float(record["test_accuracy"])
        model_of[name], method_of[name] = record["model"], record["method"]
    out = []
    for (ett, row), ett_accs in sorted(by_cell.items(), key=lambda item: (item[0][1], item[0][0])):
        if method_of[ett] != ETT:
            continue
        others = sorted((name for name, r in by_cell if r == row and model_of[name] == model_of[ett]
                         and (method_of[name] != ETT or _series_key(name) > _series_key(ett))), key=_series_key)
        for other in others:
            seeds = sorted(set(ett_accs) & set(by_cell[(other, row)]))
            diffs = [ett_accs[s] - by_cell[(other, row)][s] for s in seeds]
            if diffs:
                std = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
                out.append(Claim(row, ett, other, statistics.fmean(diffs), std, len(diffs),
                                 sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)))
    return out


def claims_markdown(claim_list):
    """The claims as a markdown table, differences in percentage points."""
    if not claim_list:
        return "No claims: the report has no ETT series with a comparison of the same target model.\n"
    lines = ["ETT minus each comparison in the same row, in percentage points of test accuracy, paired by seed: "
             "mean ± sample standard deviation over the seeds both have. \"Beyond the spread\" means the mean's "
             "magnitude exceeds that standard deviation (never with one seed).", "",
             _md_row(["sparsity %", "ETT", "compared with", "ETT − other (pp)", "n", "seeds ETT above / below",
                      "beyond the spread"]),
             "|---:|---|---|---:|---:|---:|---|"]
    for c in claim_list:
        verdict = "yes" if c.exceeds_spread else "one seed" if c.n == 1 else "no"
        spread = f" ± {100 * c.std:.2f}" if c.n > 1 else ""   # one seed has no spread, not a spread of 0
        lines.append(_md_row([f"{100 * c.row:.2f}", c.ett, c.other, f"{100 * c.mean:+.2f}{spread}",
                              c.n, f"{c.above} / {c.below}", verdict]))
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------
# Output formats.


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


def _md_row(cells):
    # A '|' inside a series name would otherwise split the column.
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def to_markdown(table):
    """Markdown table: sparsity %, remaining %, then one column per series.

    One line per row label of `table`. Cells are test accuracy in percent,
    formatted by `format_cell` (which notes a cell's own sparsity when it is
    off the label); a cell is empty where its series has no result in that row.
    """
    header = ["sparsity %", "remaining %", *table.series]
    lines = [_md_row(header), "|" + "|".join("---:" for _ in header) + "|"]
    for sparsity in table.sparsities:
        row = [f"{100 * sparsity:.2f}", f"{100 * (1 - sparsity):.2f}"]
        row += [format_cell(table.get(s, sparsity), sparsity) for s in table.series]
        lines.append(_md_row(row))
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


def _series_points(table, series):
    """(remaining %, accuracy %, std %, n) lists for one series, rows ascending.

    x is the cell's own sparsity, not its row label, so points sit at true values.
    """
    points = []
    for row in table.sparsities:
        cell = table.get(series, row)
        if cell is not None:
            points.append((100 * (1 - cell.sparsity), 100 * cell.mean, 100 * cell.std, cell.n))
    return [list(column) for column in zip(*points)]


def plot(table, path, title=None):
    """Writes a PNG of test accuracy (%) against percent of weights remaining (see `figure`)."""
    import matplotlib.pyplot as plt

    fig = figure(table, title)
    fig.savefig(path, format="png")
    plt.close(fig)


def figure(table, title=None):
    """The matplotlib figure of test accuracy (%) against percent of weights remaining.

    The x axis is log scale and inverted (100% on the left), as in
    lottery-ticket papers; error bars show std where n > 1. The legend sits
    below the axes, where it cannot hide points; the figure grows to hold it.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, NullFormatter

    fig, ax = plt.subplots(figsize=(8, 5), dpi=120, layout="constrained")
    for series in table.series:
        remaining, acc, std, n = _series_points(table, series)
        (line,) = ax.plot(remaining, acc, marker="o", markersize=4, label=series)
        bars = [(r, a, s) for r, a, s, k in zip(remaining, acc, std, n) if k > 1]
        if bars:
            ax.errorbar(*zip(*bars), fmt="none", ecolor=line.get_color(), capsize=3)
    ax.set_xscale("log")
    # Label the row sparsities when few; log-scale default ticks are sparse.
    ticks = [100 * (1 - s) for s in table.sparsities]
    if 0 < len(ticks) <= 12:
        ax.set_xticks(ticks)
        ax.xaxis.set_major_formatter(FormatStrFormatter("%.3g"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    # Limits from the points themselves, which may lie off the row labels.
    remaining_all = [100 * (1 - c.sparsity) for c in table.cells.values()]
    if remaining_all:
        ax.set_xlim(max(remaining_all) * 1.15, min(remaining_all) / 1.15)
    else:
        ax.invert_xaxis()
    ax.set_xlabel("weights remaining (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(plot_title(title))
    ax.grid(True, which="major", alpha=0.4)
    if table.series:
        _add_legend_below(fig)
    return fig


LEGEND_ROW_INCHES = 0.22  # one row of small-font legend text, with its spacing


def _add_legend_below(fig, max_columns=3):
    """The legend under the axes in as many columns (up to 3) as fit the figure's width; the figure grows to hold it."""
    renderer = fig.canvas.get_renderer()
    entries = len(fig.axes[0].get_legend_handles_labels()[1])
    for columns in range(max_columns, 0, -1):
        legend = fig.legend(loc="outside lower center", ncols=columns, fontsize="small")
        if columns == 1 or legend.get_window_extent(renderer).width <= fig.bbox.width:
            break
        legend.remove()
    width, height = fig.get_size_inches()
    fig.set_size_inches(width, height + LEGEND_ROW_INCHES * -(-entries // columns))


def plot_title(title=None) -> str:
    """The plot's title, wrapped at 80 characters: longer lines run off the 8-inch figure."""
    return textwrap.fill(title or "Test accuracy vs. sparsity", 80)


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


# ----------------------------------------------------------------------------
# Command line.


def main(argv=None):
    """`python -m elax.report RUN_DIR... --out DIR [--title T] [--tolerance TOL]`;
    returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m elax.report", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+",
                        help="run dirs, results.json files, or dirs holding several runs")
    parser.add_argument("--out", default="report", help="output dir (default: ./report)")
    parser.add_argument("--title", default=None, help="title of the report and plot")
    parser.add_argument("--mix-recipes", action="store_true",
                        help="report runs of different recipes (each recipe's series apart) instead of refusing")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                        help="tickets without an IMP level in the report share a row when their remaining "
                             f"weights differ by at most this fraction (default {DEFAULT_TOLERANCE})")
    args = parser.parse_args(argv)
    try:
        if not args.out.strip():
            raise ValueError("--out is empty; pass the folder to write the report into (default: ./report).")
        if Path(args.out).exists() and not Path(args.out).is_dir():
            raise ValueError(f"--out {args.out} is a file; the report is a folder (report.md, results.csv, "
                             f"{PLOT_FILE}). Pass a folder.")
        markdown = write_report(args.runs, args.out, title=args.title, mix_recipes=args.mix_recipes,
                                tolerance=args.tolerance)
    except (FileNotFoundError, ValueError) as e:
        print(f"elax: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # e.g. a read-only --out
        print(f"elax: error: {e.strerror or e}: {e.filename}", file=sys.stderr)
        return 2
    print(markdown)
    for name in ("report.md", "results.csv", PLOT_FILE):
        print(f"wrote {Path(args.out) / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
