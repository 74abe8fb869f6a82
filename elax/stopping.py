"""How runs stop before their end: the process-wide stop flag, the exceptions that end a run, and the exit at a
second signal.

Standard library only, so that main.py's signal handlers can reach the flag while JAX is still being imported.
"""

import os
import signal
import threading
from typing import Callable

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


def exit_on_second_signal(say: Callable[[], None], code: int) -> None:
    """From now on a second SIGINT/SIGTERM calls `say()` and ends the process with `code` at once, even while the
    main thread waits inside XLA or another C library: Python runs its signal handlers there only between
    bytecodes, so every signal seemed ignored. Python's C-level handler still writes each signal's number to the
    wakeup fd as it arrives, which a thread of ours reads. Call from the main thread, after installing the Python
    handlers; what a run keeps on disk is safe against an exit at any moment."""
    read, write = os.pipe()
    os.set_blocking(write, False)   # the C handler must never wait
    signal.set_wakeup_fd(write, warn_on_full_buffer=False)
    threading.Thread(target=_count_stop_signals, args=(read, say, code), name="elax-second-signal",
                     daemon=True).start()


def _count_stop_signals(fd: int, say: Callable[[], None], code: int) -> None:
    seen = 0
    while seen < 2:
        seen += sum(number in (signal.SIGINT, signal.SIGTERM) for number in os.read(fd, 64))
    say()
    os._exit(code)
