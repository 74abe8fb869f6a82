"""Claims: E-LTH's comparisons (ETT minus the target's IMP, other ETT and baseline series), computed from the
numbers and paired by seed."""

import statistics
from typing import NamedTuple

from elax.report.formats import md_row
from elax.report.table import DEFAULT_TOLERANCE, place, series_key
from elax.workdir import ETT


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
                         and (method_of[name] != ETT or series_key(name) > series_key(ett))), key=series_key)
        for other in others:
            seeds = sorted(set(ett_accs) & set(by_cell[(other, row)]))
            diffs = [ett_accs[s] - by_cell[(other, row)][s] for s in seeds]
            if diffs:
                std = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
                out.append(Claim(row, ett, other, statistics.fmean(diffs), std, len(diffs),
                                 sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)))
    return out


def claims_markdown(claim_list, labels=None):
    """The claims as a markdown table, differences in percentage points; series shown by `labels` ({name: label},
    e.g. `labels.series_labels(table)`) where given, else by name."""
    label = (labels or {}).get
    if not claim_list:
        return "No claims: the report has no ETT series with a comparison of the same target model.\n"
    lines = ["ETT minus each comparison in the same row, in percentage points of test accuracy, paired by seed: "
             "mean ± sample standard deviation over the seeds both have. \"Beyond the spread\" means the mean's "
             "magnitude exceeds that standard deviation (never with one seed).", "",
             md_row(["sparsity %", "ETT", "compared with", "ETT − other (pp)", "n", "seeds ETT above / below",
                     "beyond the spread"]),
             "|---:|---|---|---:|---:|---:|---|"]
    for c in claim_list:
        verdict = "yes" if c.exceeds_spread else "one seed" if c.n == 1 else "no"
        spread = f" ± {100 * c.std:.2f}" if c.n > 1 else ""   # one seed has no spread, not a spread of 0
        lines.append(md_row([f"{100 * c.row:.2f}", label(c.ett, c.ett), label(c.other, c.other),
                             f"{100 * c.mean:+.2f}{spread}",
                             c.n, f"{c.above} / {c.below}", verdict]))
    return "\n".join(lines) + "\n"
