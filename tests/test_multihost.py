"""Multi-process runs on one machine: 2 processes x 2 CPU devices (jax.distributed on 127.0.0.1, gloo
collectives) train what 1 process x 4 devices trains, streaming each process's share of every batch; when one dies
the other stops at once, and starting both again resumes."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from test_cli import finish, main_py, results
from conftest import ROOT, tiny_cli_args

pytestmark = pytest.mark.multiprocess

# Streamed (each process reads its own rows), one pruned level, a model of dense layers with BatchNorm
# (tests/toy_family.py): its statistics are taken over the global batch, as a ResNet's, and it compiles in a second.
# A learning rate of 0.01 keeps gloo's and XLA's sums, which round differently, within the tolerance below.
ARGS = tiny_cli_args(os.path.join(ROOT, "tests", "families_config.py"), **{
    "lottery.levels": 1, "model.name": "toy_1-1_w16-16", "data.source": "stream", "data.workers": 0,
    "train.lr": 0.01})
# Tests of processes and signals, not numerics: a plain MLP (tests/families_config.py).
PLAIN_ARGS = tiny_cli_args(os.path.join(ROOT, "tests", "families_config.py"), **{
    "lottery.levels": 1, "model.name": "plain_1-1_w32-32", "data.source": "stream", "data.workers": 0,
    "train.epochs": 4})


def launch(workdir, processes: int, devices: int, extra_args=lambda process: [], args=ARGS):
    """`processes` copies of one main.py command (`args`, plus `extra_args(i)` for process i), each with
    `devices` CPU devices, joined on a free port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} "
                                      f"--xla_force_host_platform_device_count={devices}"}
    return [main_py([*args, f"--workdir={workdir}", f"--coordinator=127.0.0.1:{port}",
                     f"--num_processes={processes}", f"--process_id={i}", *extra_args(i)],
                    env=env, start_new_session=True)
            for i in range(processes)]


def wait_all(procs):
    outcomes = [finish(p) for p in procs]
    for code, _, err in outcomes:
        assert code == 0, err[-3000:]
    return outcomes


def lost_peer_lines(stderr: str) -> list[str]:
    """elax's lines of `stderr`, up to their first " (" (JAX's agent may log lines of its own around them, and its
    C++ logging, writing to the same file, may leave one of them unfinished before elax's)."""
    return [line[line.index("elax:"):].split(" (")[0] for line in stderr.splitlines() if "elax:" in line]


def test_two_processes_train_as_one_stop_when_one_dies_and_resume(tmp_path):
    # The reference: one process with 4 devices. It joins a one-process jax.distributed run so that its
    # all-reduces go through gloo as the two-process run's do: XLA:CPU's in-process all-reduce sums in another
    # order, which moves results by ~1e-7 and, through pruning and retraining, a test image or so.
    reference_dir = str(tmp_path / "one")
    ((_, out, _),) = wait_all(launch(reference_dir, processes=1, devices=4))
    assert "on 4 cpu device(s)" in out

    # A host dies mid-run. Before: the survivor waited inside a train step's all-reduce or an Orbax barrier (or,
    # at a host-side collective, printed gloo's traceback and then waited in JAX's exit handler) until JAX's
    # heartbeat noticed, ~90 s, then JAX aborted it with a C++ stack trace. Now elax's watchdog tells it at once.
    workdir = str(tmp_path / "two")
    procs = launch(workdir, processes=2, devices=2)
    metrics = os.path.join(workdir, "level_00", "metrics.jsonl")
    deadline = time.time() + 240
    while not (os.path.exists(metrics) and os.path.getsize(metrics) > 0):  # level 0 has saved its first epoch
        assert all(p.poll() is None for p in procs), "the run ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.02)
    os.killpg(procs[1].pid, signal.SIGKILL)   # three epochs to go, each step an all-reduce with process 1
    procs[1].communicate()
    start = time.time()
    code, _, err = finish(procs[0], timeout=60)
    assert (code, lost_peer_lines(err)) == (5, ["elax: error: another process of this run stopped"])
    assert "Traceback" not in err and time.time() - start < 30
    assert not os.path.exists(os.path.join(workdir, "results.json"))   # no level finished

    # Both started again: the run resumes and ends as the uninterrupted one-process run did.
    (_, out0, _), (_, out1, _) = wait_all(launch(workdir, processes=2, devices=2))
    assert "in 2 processes (this is process 0)" in out0 and "level  1 | imp" in out0
    assert "level" not in out1.replace("(this is process 1)", "")   # only process 0 reports
    expected, got = results(reference_dir), results(workdir)
    assert [r["level"] for r in got] == [0, 1]
    for a, b in zip(got, expected):
        assert {k: v for k, v in a.items() if not k.startswith("test_")} == {
            k: v for k, v in b.items() if not k.startswith("test_")}
        assert a["test_accuracy"] == pytest.approx(b["test_accuracy"], abs=1e-5)
        assert a["test_loss"] == pytest.approx(b["test_loss"], abs=1e-5)
    for level in (0, 1):   # process 0 alone wrote them, each epoch once (level 0's first before the kill)
        with open(os.path.join(workdir, f"level_{level:02d}", "metrics.jsonl")) as f:
            assert [json.loads(line)["epoch"] for line in f] == [1, 2]


def test_sigterm_stops_every_process_together_after_saving(tmp_path):
    # Before: JAX's own SIGTERM handler only logged the signal, and the run trained on to its end.
    workdir = tmp_path / "run"
    procs = launch(str(workdir), processes=2, devices=2, args=PLAIN_ARGS)
    metrics = workdir / "level_00" / "metrics.jsonl"
    deadline = time.time() + 240
    while not (metrics.exists() and metrics.stat().st_size > 0):
        assert all(p.poll() is None for p in procs), "the run ended before it could be stopped"
        assert time.time() < deadline
        time.sleep(0.02)
    for p in procs:
        p.send_signal(signal.SIGTERM)   # as a scheduler does
    for code, out, err in (finish(p, timeout=60) for p in procs):
        assert "Stopping at the next epoch end, after saving a checkpoint" in out
        assert code == 130 and re.fullmatch(
            r"elax: error: interrupted: imp plain_1-1_w32-32 level (0 \(dense\)|1) stopped at step \d+, after saving; "
            r"the same command resumes it\.", err.strip().splitlines()[-1])


def test_a_process_that_fails_alone_ends_every_process_in_one_line(tmp_path):
    # Process 0 alone writes metrics, and a folder stands where its level's file goes; process 1 waits for it in a
    # collective. Before: JAX's shutdown held both for 5 minutes, then aborted both with C++ stack traces.
    workdir = tmp_path / "run"
    (workdir / "level_00" / "metrics.jsonl").mkdir(parents=True)
    start = time.time()
    (code0, _, err0), (code1, _, err1) = (finish(p, timeout=120) for p in launch(str(workdir), 2, devices=2,
                                                                                   args=PLAIN_ARGS))
    assert (code0, err0.strip().splitlines()) == (2, [
        f"elax: error: Is a directory ({workdir}/level_00/metrics.jsonl). Check the path, its permissions and free "
        "space; finished levels are kept."])
    assert (code1, lost_peer_lines(err1)) == (5, ["elax: error: another process of this run stopped"])
    assert "Traceback" not in err1
    # Start-up, then distributed.end_after_error's 10 s wait for the others (14 s here; before: 305 s).
    assert time.time() - start < 120


def test_the_second_to_learn_of_a_lost_peer_waits_for_the_first_ones_line(monkeypatch):
    # A collective's error and the watchdog's thread may learn of it together; the thread ends the process as soon
    # as report_lost_peer returns, which once cut the main thread's line before it was printed.
    import threading
    from elax import exits
    monkeypatch.setattr(exits, "_lost_peer_reported", False)
    printing, lines = threading.Event(), []

    def slow_error(message, code):
        printing.set()
        time.sleep(0.3)
        lines.append(message)
        return code

    monkeypatch.setattr(exits, "error", slow_error)
    first = threading.Thread(target=exits.report_lost_peer, args=("a collective failed",))
    first.start()
    assert printing.wait(5)
    assert (exits.report_lost_peer("its watchdog connection closed"), len(lines)) == (exits.PEER_LOST, 1)
    first.join()
    assert len(lines) == 1 and lines[0].startswith("another process of this run stopped (a collective failed)")


def test_multi_process_flags_are_checked_before_jax_waits_for_peers():
    from elax import distributed
    assert distributed.requested(process_id=1)      # a lone --process_id is a multi-process start, not ignored
    assert not distributed.requested()
    for coordinator in ("notahost", "127.0.0.1:99999", "127.0.0.1:", ":1234"):
        with pytest.raises(ValueError) as info:
            distributed.initialize(coordinator, 2, 0)
        assert str(info.value).startswith(f"cannot start a multi-process run: --coordinator={coordinator!r} is not "
                                          "HOST:PORT with a port in 1-65535. Pass --coordinator=HOST:PORT")



def test_processes_started_with_different_configs_stop_at_once_naming_the_difference(tmp_path):
    # Without the check they trained until their first collective of different shapes, and waited there forever.
    procs = launch(str(tmp_path / "run"), processes=2, devices=1,
                   extra_args=lambda i: ["--config.train.lr=0.2"] if i == 1 else [])
    for code, _, err in map(finish, procs):
        assert code == 2
        assert err.strip().endswith("elax: error: process 1 was started with another config than process 0 "
                                    "(train.lr: 0.01 vs 0.2). Start every process with the same --config, --config.* "
                                    "overrides and --workdir (data.dir may differ between hosts), from the same elax "
                                    "checkout and JAX version.")
    assert not os.path.exists(tmp_path / "run")


def test_a_coordinator_port_in_use_is_refused_before_jax_starts():
    from elax import distributed
    with socket.socket() as taken:   # JAX crashed (segfault) when process 0 could not listen on the port
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ValueError) as info:
            distributed.initialize(f"127.0.0.1:{port}", 2, 0)
    assert str(info.value) == (f"cannot start a multi-process run: port {port} of --coordinator=127.0.0.1:{port} is "
                               "in use on this host (another run's coordinator?). Pick a free port, the same on every "
                               "host. Pass --coordinator=HOST:PORT --num_processes=N --process_id=I (0 <= I < N) on "
                               "every host, or start under SLURM (docs/scaling.md, 'Multi-host runs').")


def test_decisions_that_differ_between_processes_are_taken_together(tmp_path):
    # A checkpoint save is collective: a process whose clock said "due" while the other's did not waited forever.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = ("import sys; from elax import distributed; "
              "distributed.initialize(sys.argv[1], 2, int(sys.argv[2])); distributed.barrier('test'); "
              "print(distributed.any_process(int(sys.argv[2]) == 1, False, True))")
    procs = [subprocess.Popen([sys.executable, "-c", script, f"127.0.0.1:{port}", str(i)], cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(2)]
    for code, out, err in map(finish, procs):
        assert code == 0, err[-2000:]
        assert out.splitlines()[-1] == "(True, False, True)"
