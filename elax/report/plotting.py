"""The accuracy plot: test accuracy (%) against percent of weights remaining, one line per series, written as PNG,
PDF and SVG.

Each series has its own colour (Okabe-Ito, a colour-blind-safe palette) and marker; the line style says its
role: the target's IMP and ETT solid, a source's IMP dashed, baselines dash-dotted, and a dotted horizontal line
at each target model's dense accuracy (the mean of its IMP level 0). The y-range follows `y_range` unless given.

matplotlib is imported inside the functions that draw, not at module level, so that `import elax.report` stays
fast and standard library only.
"""

import math
import statistics
import textwrap
from pathlib import Path

from elax.report.labels import model_label, series_labels, sources, targets
from elax.workdir import ETT, IMP

PLOT_FILE = "accuracy_vs_sparsity.png"
PLOT_FORMATS = ("png", "pdf", "svg")  # the PNG at PLOT_FILE, the others beside it under its stem
LEGEND_ROW_INCHES = 0.22  # one row of small-font legend text, with its spacing

# Okabe & Ito (2008), in an order that keeps neighbours apart; yellow last, as it is faint on white.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#E69F00", "#CC79A7", "#56B4E9", "#000000", "#F0E442")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "p", "h", "*")
LINESTYLES = {"target": "-", "source": "--", "ett": "-", "baseline": "-."}
DENSE_LINESTYLE = ":"

# The y-range rule (see `y_range`).
FAR_OUT_IQRS = 3.0   # Tukey's "far out" fence: Q1 - 3 IQR
MIN_IQR = 1.0        # percentage points; below it, near-equal points would make every other one an outlier
Y_PADDING = 0.05     # of the range, and at least MIN_Y_PADDING percentage points
MIN_Y_PADDING = 0.5


def plot(table, path, title=None, ylim=None):
    """Writes the figure (see `figure`) as a PNG at `path` and as PDF and SVG beside it (same stem); returns the
    paths written."""
    import matplotlib.pyplot as plt  # lazy: see the module docstring

    fig = figure(table, title, ylim)
    try:
        return [_save(fig, out, fmt) for fmt, out in zip(PLOT_FORMATS, plot_paths(path))]
    finally:
        plt.close(fig)


def plot_paths(path) -> list:
    """The files `plot` writes for a PNG at `path`, one per PLOT_FORMATS."""
    path = Path(path)
    return [path if fmt == "png" else path.with_suffix(f".{fmt}") for fmt in PLOT_FORMATS]


def _save(fig, path, fmt):
    import matplotlib

    # TrueType fonts in the PDF (venues refuse Type 3); no dates and fixed SVG ids, so reruns give the same files.
    metadata = {"pdf": {"CreationDate": None}, "svg": {"Date": None}}.get(fmt)
    with matplotlib.rc_context({"pdf.fonttype": 42, "svg.hashsalt": "elax"}):
        fig.savefig(path, format=fmt, metadata=metadata)
    return path


def figure(table, title=None, ylim=None):
    """The matplotlib figure of test accuracy (%) against percent of weights remaining.

    The x axis is log scale and inverted (100% on the left), as in lottery-ticket papers; error bars show std
    where n > 1. `ylim` (low, high), in percent, overrides `y_range`. The title says the seeds (`plot_title`).
    The legend sits below the axes, where it cannot hide points; the figure grows to hold it.
    """
    import matplotlib  # lazy: see the module docstring

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=120, layout="constrained")
    styles, names, points = series_styles(table), series_labels(table), []
    for series in table.series:
        remaining, acc, std, n = _series_points(table, series)
        ax.plot(remaining, acc, markersize=5, linewidth=1.5, label=names[series], **styles[series])
        bars = [(r, a, s) for r, a, s, k in zip(remaining, acc, std, n) if k > 1]
        if bars:
            ax.errorbar(*zip(*bars), fmt="none", ecolor=styles[series]["color"], capsize=3)
        points += zip(acc, [s if k > 1 else 0.0 for s, k in zip(std, n)])
    dense = dense_lines(table)
    for label, accuracy, series in dense:
        ax.axhline(accuracy, color=styles[series]["color"], linestyle=DENSE_LINESTYLE, linewidth=1.2, label=label)
    _set_x_axis(ax, table)
    _set_y_range(ax, points, [accuracy for _, accuracy, _ in dense], ylim)
    ax.set_xlabel("weights remaining (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(plot_title(title, [i.seeds for i in table.info.values()]))
    ax.grid(True, which="major", alpha=0.4)
    if table.series:
        _add_legend_below(fig)
    return fig


def role(table, series) -> str:
    """'target' (IMP of a target model), 'source' (IMP of a source), 'ett' or 'baseline' (see labels.sources)."""
    info = table.info.get(series)
    if info is None or info.method not in (IMP, ETT):
        return "baseline"
    if info.method == ETT:
        return "ett"
    return "source" if info.model in sources(table) else "target"


def series_styles(table) -> dict:
    """{series: {color, marker, linestyle}}: colour and marker by the series' place in the table (no two series
    share both before 24 series), line style by its `role`."""
    return {series: {"color": PALETTE[i % len(PALETTE)], "marker": MARKERS[i % len(MARKERS)],
                     "linestyle": LINESTYLES[role(table, series)]} for i, series in enumerate(table.series)}


def dense_lines(table) -> list:
    """[(label, accuracy %, IMP series)]: per target model (and recipe), its first IMP series with a level 0,
    labelled 'Dense ResNet-20' (' [recipe <id>]' in a report of several recipes)."""
    with_recipe = len({i.recipe for i in table.info.values()}) > 1
    found, seen, target_models = [], set(), targets(table)
    for series in table.series:
        info = table.info.get(series)
        if info and info.method == IMP and info.dense is not None and info.model in target_models:
            if (info.model, info.recipe) not in seen:
                seen.add((info.model, info.recipe))
                recipe = f" [recipe {info.recipe}]" if with_recipe else ""
                found.append((f"Dense {model_label(info.model)}{recipe}", 100 * info.dense, series))
    return found


def y_range(points, lines=()):
    """(low, high, hidden): the y-range (%) that shows where the methods differ, and how many points lie below it.

    `points` are (mean, std) in percent, `lines` the dense accuracies. Means below Tukey's far-out fence,
    Q1 - 3 IQR of all means and lines (IQR at least 1 pp; no fence with fewer than 4 values), are outliers (a
    collapsed ticket at chance level would flatten every other curve): the range runs from the lowest mean - std
    of the other points (and lines) to the highest mean + std, padded by 5% (at least 0.5 pp) and kept in [0, 100].
    """
    values = [m for m, _ in points] + list(lines)
    fence = _far_out_fence(values)
    kept = [(m, s) for m, s in points if m >= fence] + [(v, 0.0) for v in lines if v >= fence]
    low, high = min(m - s for m, s in kept), max(m + s for m, s in kept)
    pad = max(Y_PADDING * (high - low), MIN_Y_PADDING)
    return max(low - pad, 0.0), min(high + pad, 100.0), sum(m < fence for m, _ in points)


def _far_out_fence(values):
    if len(values) < 4:
        return -math.inf
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1 - FAR_OUT_IQRS * max(q3 - q1, MIN_IQR)


def _set_y_range(ax, points, lines, ylim):
    """The y-range of `ylim` or `y_range`, with a note of the points it leaves out."""
    if ylim is not None:
        low, high = check_ylim(ylim)
    elif points or lines:
        low, high, _ = y_range(points, lines)
    else:
        return
    ax.set_ylim(low, high)
    below, above = sum(m < low for m, _ in points), sum(m > high for m, _ in points)
    notes = [f"{k} point{'s' if k > 1 else ''} {where} the y-range" for k, where in ((below, "below"),
                                                                                  (above, "above")) if k]
    if notes:  # the reader must know that a line leaves the axes on purpose
        ax.text(0.01, 0.01, "; ".join(notes), transform=ax.transAxes, fontsize="x-small", color="0.3")


def check_ylim(ylim):
    """(low, high) as floats; ValueError unless 0 <= low < high <= 100 (percent)."""
    try:
        low, high = (float(v) for v in ylim)
    except (TypeError, ValueError):
        raise ValueError(f"ylim must be two numbers LOW,HIGH (test accuracy in percent), got {ylim!r}") from None
    if not 0 <= low < high <= 100:
        raise ValueError(f"ylim must satisfy 0 <= LOW < HIGH <= 100 (test accuracy in percent), got {low:g},{high:g}")
    return low, high


def _set_x_axis(ax, table):
    """Log scale, inverted; the row sparsities as ticks when few; limits from the points themselves."""
    from matplotlib.ticker import FormatStrFormatter, NullFormatter

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


def plot_title(title=None, seeds=()) -> str:
    """The plot's title ('Test accuracy vs. sparsity' by default) and its seed count: ', 3 seeds', ', 1 seed', or
    ', n = 1-3 seeds' when the series have different numbers of seeds (`seeds`: each series'), unless the title
    already speaks of seeds. Wrapped at 80 characters: longer lines run off the 8-inch figure."""
    title = title or "Test accuracy vs. sparsity"
    if seeds and "seed" not in title.lower():
        low, high = min(seeds), max(seeds)
        title += f", {low} seed{'s' if low > 1 else ''}" if low == high else f", n = {low}-{high} seeds"
    return textwrap.fill(title, 80)


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
