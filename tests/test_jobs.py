"""The experiment's job runner: dependency order, how many at once, and what a failure does to the others."""

import gc
import os
import signal
import threading
import time

import pytest

from elax import stopping
from elax.runs import jobs

pytestmark = pytest.mark.smoke   # the first look: python -m pytest -m smoke


class Recorder:
    """Fake jobs that note when they start and end and how many run at once."""

    def __init__(self):
        self.events, self.active, self.most, self.lock = [], 0, 0, threading.Lock()

    def job(self, name, after=(), seconds=0.05):
        def run(log):
            with self.lock:
                self.active += 1
                self.most = max(self.most, self.active)
                self.events.append(("start", name))
            time.sleep(seconds)
            log(f"{name} ran")
            with self.lock:
                self.active -= 1
                self.events.append(("end", name))
        return jobs.Job(name, f"run {name}", run, tuple(after))


def test_jobs_start_after_their_dependencies_and_at_most_workers_at_once():
    r, lines = Recorder(), []
    graph = [r.job("a"), r.job("b", seconds=0.15), r.job("c", ["a"]), r.job("d", ["b"]), r.job("e", ["a", "b"])]
    jobs.run_jobs(graph, workers=2, log=lines.append)
    assert sorted(name for kind, name in r.events if kind == "start") == ["a", "b", "c", "d", "e"]
    position = {event: i for i, event in enumerate(r.events)}
    for job in graph:
        for dependency in job.after:
            assert position[("end", dependency)] < position[("start", job.name)]
    assert r.most == 2
    assert "== run c (c)" in lines and "c | c ran" in lines   # concurrent lines say which run they are from


def test_one_worker_runs_the_jobs_in_order_with_unprefixed_lines():
    r, lines = Recorder(), []
    jobs.run_jobs([r.job("a"), r.job("b"), r.job("c", ["a"])], workers=1, log=lines.append)
    assert r.events == [(kind, name) for name in "abc" for kind in ("start", "end")]
    assert lines == ["== run a", "a ran", "== run b", "b ran", "== run c", "c ran"]


def runs_until_stopped(log, seen_stop):
    """What a level does: it stops at its next epoch end once STOP is set."""
    while not stopping.STOP.wait(0.01):
        pass
    seen_stop.append(True)
    raise stopping.RunStopped("stopped")


def test_a_failure_stops_the_runs_in_flight_starts_nothing_new_and_is_raised():
    r, seen_stop = Recorder(), []

    def fails(log):
        time.sleep(0.05)
        raise ValueError("boom")

    graph = [jobs.Job("bad", "fails", fails), jobs.Job("long", "long", lambda log: runs_until_stopped(log, seen_stop)),
             r.job("later", ["bad"]), r.job("queued")]
    with pytest.raises(ValueError, match="boom"):
        jobs.run_jobs(graph, workers=2, log=lambda _: None)
    assert seen_stop == [True] and r.events == []    # "queued" waited for a free worker, then nothing new started
    assert not stopping.STOP.is_set()                     # cleared for the next experiment of this process


@pytest.fixture
def ctrl_c_raises():
    """Python's own Ctrl-C handler for the test, also where SIGINT was ignored when the suite started (a shell
    starts background jobs, `cmd &`, with SIGINT ignored: the signal would then be lost and the test hang).
    Garbage collection is off meanwhile: a KeyboardInterrupt raised inside a collection's callback (JAX has one) is
    printed as "Exception ignored" and lost (seen once in a full run)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    gc.disable()
    yield
    gc.enable()
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_stops_the_runs_in_flight_and_is_raised(ctrl_c_raises):
    seen_stop, lines = [], []

    def presses_ctrl_c(log):
        time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)   # Python raises KeyboardInterrupt in the main thread, the scheduler's
        runs_until_stopped(log, seen_stop)

    graph = [jobs.Job("a", "a", presses_ctrl_c), jobs.Job("b", "b", lambda log: runs_until_stopped(log, seen_stop))]
    with pytest.raises(KeyboardInterrupt):
        jobs.run_jobs(graph, workers=2, log=lines.append)
    assert seen_stop == [True, True] and not stopping.STOP.is_set()
    assert lines[-1].startswith("Stopping: the runs in flight save a checkpoint at their next epoch end")


def test_a_job_waiting_for_a_job_that_is_not_listed_is_an_error():
    r = Recorder()
    with pytest.raises(ValueError, match=r"jobs \['b'\] wait for jobs that never run"):
        jobs.run_jobs([r.job("a"), r.job("b", ["missing"])], workers=2, log=lambda _: None)


def test_concurrent_runs_default_is_three_on_cpu_one_for_streamed_data_and_a_request_wins():
    assert jobs.concurrent_runs(0) == 3   # the suite runs on CPU
    assert jobs.concurrent_runs(0, streamed=True) == 1
    assert jobs.concurrent_runs(1) == 1 and jobs.concurrent_runs(5) == 5 and jobs.concurrent_runs(2, True) == 2


def test_several_processes_run_one_at_a_time_and_refuse_more(monkeypatch):
    monkeypatch.setattr(jobs.jax, "process_count", lambda: 2)
    assert jobs.concurrent_runs(0) == 1 and jobs.concurrent_runs(1) == 1
    with pytest.raises(ValueError, match="config.experiment.concurrent_runs: 3 runs at once need one process; "
                                         "this run has 2"):
        jobs.concurrent_runs(3)
