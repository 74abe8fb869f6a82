"""Runs: the resumable level loop and the runs that feed it tickets.

- `imp`:        Iterative Magnitude Pruning with rewinding (`run_imp`).
- `ett`:        elastic transfer of a source IMP run's tickets (`run_transfer`).
- `baselines`:  baseline tickets at a reference IMP run's sparsities (`run_baseline`, `BASELINES`).
- `experiment`: the E-LTH experiment in one command (`run_experiment`).
- `loop`:       train a `Ticket` as a level of a run (`train_ticket`, `train_and_record`).
- `tickets`:    read a run's ticket back (`load_ticket`); `context`: one run's fixed setup (`setup`).

`RUNNERS` maps a config mode to its run function: run(config, workdir, log) -> records.
"""

from elax.runs.baselines import BASELINES, run_baseline
from elax.runs.context import RunContext, make_trainer, setup
from elax.runs.ett import run_transfer
from elax.runs.experiment import run_experiment
from elax.runs.imp import run_imp
from elax.runs.loop import train_and_record, train_ticket
from elax.runs.tickets import load_ticket

RUNNERS = {"imp": run_imp, "transfer": run_transfer, "baseline": run_baseline, "experiment": run_experiment}

__all__ = ["BASELINES", "RUNNERS", "RunContext", "load_ticket", "make_trainer", "run_baseline", "run_experiment",
           "run_imp", "run_transfer", "setup", "train_and_record", "train_ticket"]
