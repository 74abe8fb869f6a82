"""The run modes (`config.mode`): what `python main.py` runs. Each mode checks its config first, then runs
resumably in its workdir: run(config, workdir, log) -> records."""

import dataclasses
import os
from typing import Callable

import ml_collections

from elax import report
from elax.config import ConfigError
from elax.registry import Registry
from elax.runs.baselines import check_baseline, run_baseline
from elax.runs.checks import check_training
from elax.runs.ett import check_transfer, run_transfer
from elax.runs.experiment import check_experiment, run_experiment
from elax.runs.imp import run_imp


@dataclasses.dataclass(frozen=True)
class Mode:
    run: Callable                 # run(config, workdir, log) -> records
    check: Callable               # check(config): ConfigError naming the first bad key
    trains: bool = True           # False: reads finished runs only (no devices, no workdir claimed)
    table: bool = True            # the command line prints the records' table at the end (the others log a report)


def run_report(config: ml_collections.ConfigDict, workdir: str, log=print) -> list[dict]:
    """Write the report of `report.runs` (default: the workdir) into `report.out` (default: WORKDIR/report)."""
    runs, out = list(config.report.runs) or [workdir], config.report.out or os.path.join(workdir, "report")
    log(f"elax report of {', '.join(runs)} into {os.path.abspath(out)}")
    log(report.write_report(runs, out))
    return report.load_records(runs)


MODES: Registry[Mode] = Registry("mode")
MODES.register("imp", Mode(run_imp, check_training))
MODES.register("transfer", Mode(run_transfer, check_transfer))
MODES.register("baseline", Mode(run_baseline, check_baseline))
MODES.register("experiment", Mode(run_experiment, check_experiment, table=False))
MODES.register("report", Mode(run_report, lambda config: None, trains=False, table=False))


def mode_of(config: ml_collections.ConfigDict) -> Mode:
    """The Mode of `config.mode`; ConfigError listing the modes otherwise."""
    if config.mode not in MODES:
        raise ConfigError("mode", MODES.unknown(config.mode))
    return MODES.get(config.mode)


def check(config: ml_collections.ConfigDict) -> None:
    """Every check of `config` that its mode makes before reading any data (ConfigError naming the key)."""
    mode_of(config).check(config)
