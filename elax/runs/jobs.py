"""Run the runs of an experiment in dependency order, several at once in threads of one process.

Why threads: on a small CPU one small run keeps about one core busy (XLA:CPU runs a tiny model's ops on one
thread) and its host work (evaluation, Orbax saves, Python) leaves that core idle in between, so three runs at
once finish the quickstart sooner on 2 cores (docs/performance.md). Every run is a deterministic function of
its config and its inputs' files, so the schedule changes no result (results.json is byte-identical).

Each run in flight keeps a row of the terminal for its progress bar (`outputs.progress_row`), and its log lines are
prefixed with its name; in a log file, the runs' per-epoch lines interleave whole, each prefixed.

When one run fails or the user presses Ctrl-C, nothing new starts and the runs in flight stop at their next epoch
end after saving a checkpoint (`elax.stopping.STOP`), so the same command resumes them.
"""

import concurrent.futures as cf
import dataclasses
from typing import Callable

import jax

from elax import distributed
from elax.runs import outputs
from elax.stopping import STOP, RunStopped


@dataclasses.dataclass(frozen=True)
class Job:
    """One run: `run(log)` trains and records it; it starts once the jobs named in `after` have finished."""

    name: str                      # its directory under the experiment's workdir, e.g. "seed_1/imp_cifar_resnet_20"
    title: str                     # what the log says when it starts
    run: Callable[[Callable], object]
    after: tuple[str, ...] = ()


def concurrent_runs(requested: int, streamed: bool = False) -> int:
    """How many runs train at once: `experiment.concurrent_runs`, or 0 for the default: 3 on CPU (measured
    above); 1 on accelerators (not measured there), for streamed data (each run has its own decoding worker
    processes) and in multi-process runs, where every process must issue the same collectives in the same order."""
    if jax.process_count() > 1:
        if requested > 1:
            raise ValueError(f"config.experiment.concurrent_runs: {requested} runs at once need one process; "
                             f"this run has {jax.process_count()}. Leave it at 0 (one at a time here).")
        return 1
    if requested:
        return requested
    return 3 if jax.default_backend() == "cpu" and not streamed else 1


def run_jobs(jobs: list[Job], workers: int, log=print) -> None:
    """Run every job after the jobs it depends on (listed before it), `workers` at a time."""
    if workers == 1:
        for job in jobs:
            log(f"== {job.title}")
            job.run(log)
            # Process 0 writes a run's records; the next runs read them (a baseline, its reference's levels).
            distributed.barrier(f"elax run {job.name} done")
        return
    try:
        with cf.ThreadPoolExecutor(workers, thread_name_prefix="elax-run") as pool:
            _schedule(jobs, workers, pool, log)
    finally:
        STOP.clear()


def _schedule(jobs: list[Job], workers: int, pool: cf.Executor, log) -> None:
    pending, running, done, failure = list(jobs), {}, set(), None
    rows = {}   # future -> the terminal row of its run's progress bars
    while running or (pending and failure is None):
        if failure is None:
            for job in [j for j in pending if set(j.after) <= done][:workers - len(running)]:
                pending.remove(job)
                log(f"== {job.title} ({job.name})")
                row = min(set(range(workers)) - set(rows.values()))
                future = pool.submit(_run_in_row, job, row, _prefixed(log, job.name))
                running[future], rows[future] = job, row
        if not running:   # nothing can start: a job depends on one that is not in the list
            raise ValueError(f"jobs {[j.name for j in pending]} wait for jobs that never run")
        try:
            finished, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
        except KeyboardInterrupt:
            log("Stopping: the runs in flight save a checkpoint at their next epoch end (the same command resumes).")
            STOP.set()
            failure = failure or KeyboardInterrupt()
            continue
        for future in finished:
            job, error = running.pop(future), future.exception()
            rows.pop(future)
            if error is None:
                done.add(job.name)
            elif not isinstance(error, RunStopped) and failure is None:
                failure = error
                log(f"{job.name} failed; the other runs stop at their next epoch end after saving.")
                STOP.set()
    if failure is not None:
        raise failure


def _run_in_row(job: Job, row: int, log):
    with outputs.progress_row(row):
        return job.run(log)


def _prefixed(log, name: str):
    """The job's log, each line prefixed with its name (lines of concurrent runs interleave)."""
    return lambda message: log(f"{name} | {message}")
