"""Progress as a user sees it: a real `python main.py` run with its output in files (not a terminal) prints plain
lines, a line per epoch, never an escape code or a carriage return; on a terminal, runs trained side by side get a
bar each on a row of their own. The same run's TensorBoard event files are read back (config.tensorboard)."""

import glob
import json
import os
import re
import struct
import subprocess
import sys
import threading
import time
import types

import ml_collections
import numpy as np
import pytest

from conftest import ROOT, tiny_cli_args
from elax import cli, workdir as wd
from elax.runs import jobs, loop

MODEL = "cifar_resnet_14_4"
EPOCH_LINE = re.compile(rf"imp {MODEL} level (\d)( \(dense\))?: epoch ([12])/2, step (12|24)/24, loss \d+\.\d{{3}}, "
                        r"acc [01]\.\d{3}, test acc [01]\.\d{3}, [\d,]+ img/s")
RESULT_LINE = re.compile(rf"level  [01] \| imp       \| {MODEL} \| sparsity +\d+\.\d\d% \| test accuracy +\d+\.\d\d%")
OTHER_LINES = [re.compile(pattern) for pattern in (
    r"elax imp run in \S+ on \d+ cpu device\(s\)", r"data: digits, 1437 training images, .*", r"", r"\|[-:|\d. ]+\|",
    r"\| sparsity % \| remaining % \| IMP ResNet-14 \(w4\) \|")]


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory):
    """(workdir, stdout, stderr) of a tiny 2-level IMP run with progress and TensorBoard on, its output in files."""
    folder = tmp_path_factory.mktemp("progress")
    workdir, out_path, err_path = str(folder / "run"), folder / "out.log", folder / "err.log"
    args = tiny_cli_args(**{"lottery.levels": 1, "progress": True, "tensorboard": True})
    with open(out_path, "w") as out, open(err_path, "w") as err:
        code = subprocess.call([sys.executable, os.path.join(ROOT, "main.py"), *args, f"--workdir={workdir}"],
                               cwd=ROOT, stdout=out, stderr=err, timeout=300)
    assert code == 0, err_path.read_text()
    return workdir, out_path.read_text(), err_path.read_text()


def test_output_to_files_is_plain_lines_with_a_line_per_epoch(logged_run):
    workdir, out, err = logged_run
    for text in (out, err):
        assert "\x1b" not in text and "\r" not in text
    lines = out.splitlines()
    for line in lines:   # every line whole: none glued to another, none of a bar
        assert EPOCH_LINE.fullmatch(line) or RESULT_LINE.fullmatch(line) or any(
            pattern.fullmatch(line) for pattern in OTHER_LINES), line
    assert not [line for line in err.splitlines() if "epoch" in line or "step/s" in line]
    expected = []
    for level in (0, 1):
        for m in metrics_lines(workdir, level):
            expected.append(f"imp {MODEL} level {level}{' (dense)' if level == 0 else ''}: epoch {m['epoch']}/2, step "
                            f"{m['step']}/24, loss {m['train_loss']:.3f}, acc {m['train_accuracy']:.3f}, test acc "
                            f"{m['test_accuracy']:.3f}, {m['images_per_s']:,.0f} img/s")
        expected.append(f"level  {level} |")   # each level's result line follows its epochs
    shown = [line if EPOCH_LINE.fullmatch(line) else line[:10] for line in lines
             if EPOCH_LINE.fullmatch(line) or RESULT_LINE.fullmatch(line)]
    assert shown == expected


def metrics_lines(workdir, level):
    with open(wd.metrics_path(workdir, level)) as f:
        return [json.loads(line) for line in f]


def read_scalars(folder):
    """{(tag, step): value} of the scalars in the TensorBoard event files of `folder`, parsed from their TFRecord
    framing: u64 length, u32 its CRC, the Event protobuf, u32 its CRC."""
    from tensorboardX.proto import event_pb2
    scalars = {}
    for path in glob.glob(os.path.join(folder, loop.EVENTS_GLOB)):
        with open(path, "rb") as f:
            data = f.read()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset:offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
            offset += 12 + length + 4
            for value in event.summary.value:
                assert (value.tag, event.step) not in scalars
                scalars[value.tag, event.step] = value.simple_value
    return scalars


def test_tensorboard_has_a_scalar_per_metric_per_epoch(logged_run):
    pytest.importorskip("tensorboardX")
    workdir, _, _ = logged_run
    for level in (0, 1):
        assert read_scalars(wd.level_dir(workdir, level)) == {
            (loop.SCALARS[key], m["step"]): float(np.float32(m[key]))
            for m in metrics_lines(workdir, level) for key in loop.SCALARS}
    assert sorted(loop.SCALARS.values()) == ["test/accuracy", "test/loss", "train/accuracy", "train/images_per_s",
                                             "train/loss", "train/lr"]


def progress_of(progress, interactive, monkeypatch):
    monkeypatch.setattr(loop, "interactive", lambda: interactive)
    ctx = types.SimpleNamespace(config=ml_collections.ConfigDict({"progress": progress}), total_steps=10)
    return loop._progress(ctx, 4, "imp m level 1", print)


def test_progress_is_a_bar_on_a_terminal_lines_elsewhere_and_nothing_when_off(monkeypatch):
    off = progress_of(False, True, monkeypatch)
    assert (off.bar, off.log) == (None, None)
    lines = progress_of(True, False, monkeypatch)
    assert (lines.bar, lines.log) == (None, print)
    with loop.progress_row(2):
        bar = progress_of(True, True, monkeypatch)
    assert (abs(bar.bar.pos), bar.bar.n, bar.bar.total, bar.log) == (2, 4, 10, None)
    bar.close()


def test_runs_side_by_side_keep_a_row_each():
    rows = {}

    def job(name, seconds):
        def run(log):
            rows[name] = loop._row.value
            time.sleep(seconds)
        return jobs.Job(name, name, run)

    # a, b and c start at once; d takes the row b leaves.
    jobs.run_jobs([job("a", 0.3), job("b", 0.05), job("c", 0.3), job("d", 0.05)], workers=3, log=lambda _: None)
    assert rows == {"a": 0, "b": 1, "c": 2, "d": 1}
    assert getattr(loop._row, "value", None) is None   # this thread draws where it did


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
