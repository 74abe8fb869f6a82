"""The accuracy plot: test accuracy (%) against percent of weights remaining, one line per series.

matplotlib is imported inside the functions that draw, not at module level, so that `import elax.report` stays
fast and standard library only.
"""

import textwrap

PLOT_FILE = "accuracy_vs_sparsity.png"
LEGEND_ROW_INCHES = 0.22  # one row of small-font legend text, with its spacing


def plot(table, path, title=None):
    """Writes a PNG of test accuracy (%) against percent of weights remaining (see `figure`)."""
    import matplotlib.pyplot as plt  # lazy: see the module docstring

    fig = figure(table, title)
    fig.savefig(path, format="png")
    plt.close(fig)


def figure(table, title=None):
    """The matplotlib figure of test accuracy (%) against percent of weights remaining.

    The x axis is log scale and inverted (100% on the left), as in
    lottery-ticket papers; error bars show std where n > 1. The legend sits
    below the axes, where it cannot hide points; the figure grows to hold it.
    """
    import matplotlib  # lazy: see the module docstring

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


def plot_title(title=None) -> str:
    """The plot's title, wrapped at 80 characters: longer lines run off the 8-inch figure."""
    return textwrap.fill(title or "Test accuracy vs. sparsity", 80)


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
