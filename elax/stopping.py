"""How runs stop before their end: the process-wide stop flag and the exceptions that end a run.

Standard library only, so that main.py's signal handlers can reach the flag while JAX is still being imported.
"""

import threading

# Set by the command line once its run starts (every module imported): before, a stop ends the process at once,
# since nothing is written yet and an interrupt raised inside an import would print that import's traceback.
STARTED = threading.Event()

# Set on Ctrl-C/SIGTERM, or when one of an experiment's concurrent runs fails: every run stops at its next epoch
# end, after saving, so that no finished epoch is lost.
STOP = threading.Event()


class RunStopped(RuntimeError):
    """`STOP` was set: the level stopped at an epoch end, after saving a checkpoint there."""


class TrainingDiverged(RuntimeError):
    """The loss or the weights became NaN or infinite: the level stops, its last good checkpoint is kept."""


def stopped(desc: str, step: int | None = None) -> RunStopped:
    """The RunStopped of run `desc`, stopped before it started (`step` None) or at `step`."""
    where = "before it started" if step is None else f"at step {step}, after saving"
    return RunStopped(f"{desc} stopped {where}; the same command resumes it.")
