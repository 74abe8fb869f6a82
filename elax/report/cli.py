"""The command line, `python -m elax.report RUN_DIR... --out DIR [--title T] [--tolerance TOL] [--mix-recipes]
[--ylim LOW,HIGH]`: writes the report and prints its table, or prints one `elax: error:` line and exits 2."""

import argparse
from pathlib import Path

from elax import exits

from elax.report.plotting import PLOT_FILE, check_ylim
from elax.report.table import DEFAULT_TOLERANCE
from elax.report.write import REPORT_FILES, write_report

DESCRIPTION = "Summaries of lottery-ticket runs: markdown and CSV tables and an accuracy plot."


def main(argv=None):
    """`python -m elax.report RUN_DIR... --out DIR [--title T] [--tolerance TOL] [--ylim LOW,HIGH]`;
    returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m elax.report", description=DESCRIPTION)
    parser.add_argument("runs", nargs="+",
                        help="run dirs, results.json files, or dirs holding several runs")
    parser.add_argument("--out", default="report", help="output dir (default: ./report)")
    parser.add_argument("--title", default=None, help="title of the report and plot")
    parser.add_argument("--mix-recipes", action="store_true",
                        help="report runs of different recipes (each recipe's series apart) instead of refusing")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                        help="tickets without an IMP level in the report share a row when their remaining "
                             f"weights differ by at most this fraction (default {DEFAULT_TOLERANCE})")
    parser.add_argument("--ylim", default=None, metavar="LOW,HIGH",
                        help="the plot's y-range in percent of test accuracy, e.g. 80,95 (default: from the "
                             "points, leaving out far outliers below)")
    args = parser.parse_args(argv)
    try:
        ylim = parse_ylim(args.ylim)
        if not args.out.strip():
            raise ValueError("--out is empty; pass the folder to write the report into (default: ./report).")
        if Path(args.out).exists() and not Path(args.out).is_dir():
            raise ValueError(f"--out {args.out} is a file; the report is a folder (report.md, results.csv, "
                             f"{PLOT_FILE}). Pass a folder.")
        markdown = write_report(args.runs, args.out, title=args.title, mix_recipes=args.mix_recipes,
                                tolerance=args.tolerance, ylim=ylim)
    except (FileNotFoundError, ValueError) as e:
        return exits.error(e, exits.BAD_INPUT)
    except OSError as e:  # e.g. a read-only --out
        return exits.error(f"{e.strerror or e}: {e.filename}", exits.BAD_INPUT)
    print(markdown)
    for name in REPORT_FILES:
        print(f"wrote {Path(args.out) / name}")
    return 0


def parse_ylim(text):
    """(low, high) of '--ylim LOW,HIGH', None when not given; ValueError naming the flag otherwise."""
    if text is None:
        return None
    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError:  # not two parts, or not numbers
        raise ValueError(f"--ylim {text!r}: give LOW,HIGH in percent of test accuracy, e.g. --ylim 80,95") from None
    return check_ylim((low, high))
