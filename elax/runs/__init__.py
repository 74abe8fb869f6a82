"""Runs: the resumable level loop and the runs that feed it tickets.

- `imp`:        Iterative Magnitude Pruning with rewinding (`run_imp`).
- `ett`:        elastic transfer of a source IMP run's tickets (`run_transfer`).
- `baselines`:  baseline tickets at a reference IMP run's sparsities (`run_baseline`, the `BASELINES` registry).
- `experiment`: the E-LTH experiment in one command (`run_experiment`); `jobs` runs its runs side by side.
- `loop`:       train a `Ticket` as a level of a run (`train_ticket`, `train_and_record`).
- `tickets`:    read a run's ticket back (`load_ticket`); `context`: one run's fixed setup (`setup`).
- `checks`:     the checks of a run's config, composed from the layers that own them.
- `modes`:      the registry of run modes (`MODES`: config.mode -> run and check).
"""

from elax.runs.baselines import BASELINES, run_baseline
from elax.runs.context import RunContext, make_trainer, setup
from elax.runs.ett import run_transfer
from elax.runs.experiment import run_experiment
from elax.runs.imp import run_imp
from elax.runs.loop import train_and_record, train_ticket
from elax.runs.modes import MODES, Mode, check, mode_of
from elax.runs.sources import config_of
from elax.runs.tickets import load_ticket

__all__ = ["BASELINES", "MODES", "Mode", "RunContext", "check", "config_of", "load_ticket", "make_trainer", "mode_of",
           "run_baseline", "run_experiment", "run_imp", "run_transfer", "setup", "train_and_record", "train_ticket"]
