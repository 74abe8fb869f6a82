"""Progress: a bar on a terminal, lines elsewhere, nothing when off; runs trained side by side get a bar each on a
row of their own. (A real `python main.py` run's output in files and its TensorBoard events: tests/test_cli.py.)"""

import threading
import time
import types

import ml_collections

from elax import cli
from elax.runs import jobs, outputs

def progress_of(progress, interactive, monkeypatch):
    monkeypatch.setattr(outputs, "interactive", lambda: interactive)
    ctx = types.SimpleNamespace(config=ml_collections.ConfigDict({"progress": progress}), total_steps=10)
    return outputs.progress_for(ctx, 4, "imp m level 1", print)


def test_progress_is_a_bar_on_a_terminal_lines_elsewhere_and_nothing_when_off(monkeypatch):
    off = progress_of(False, True, monkeypatch)
    assert (off.bar, off.log) == (None, None)
    lines = progress_of(True, False, monkeypatch)
    assert (lines.bar, lines.log) == (None, print)
    with outputs.progress_row(2):
        bar = progress_of(True, True, monkeypatch)
    assert (abs(bar.bar.pos), bar.bar.n, bar.bar.total, bar.log) == (2, 4, 10, None)
    bar.close()


def test_runs_side_by_side_keep_a_row_each():
    rows = {}

    def job(name, seconds):
        def run(log):
            rows[name] = outputs._row.value
            time.sleep(seconds)
        return jobs.Job(name, name, run)

    # a, b and c start at once; d takes the row b leaves.
    jobs.run_jobs([job("a", 0.3), job("b", 0.05), job("c", 0.3), job("d", 0.05)], workers=3, log=lambda _: None)
    assert rows == {"a": 0, "b": 1, "c": 2, "d": 1}
    assert getattr(outputs._row, "value", None) is None   # this thread draws where it did


def test_the_log_writes_whole_lines_from_threads(capsys):
    def write(name):
        for i in range(200):
            cli._print_above_progress_bars(f"{name} | line {i} of the run")

    threads = [threading.Thread(target=write, args=(name,)) for name in "abc"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = capsys.readouterr().out.splitlines()
    assert sorted(lines) == sorted(f"{name} | line {i} of the run" for name in "abc" for i in range(200))
