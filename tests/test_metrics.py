"""Per-epoch metrics: every metrics.jsonl line says its run, level, seed, method and sparsity; `load_metrics` reads
them (and older lines without those keys) as rows; a missing tensorboardX is a one-line config error.
(The TensorBoard event files of a real run are read back in tests/test_progress.py, which makes that run.)"""

import json
import os
import shutil
import sys
import types

import ml_collections
import pytest

from elax import report, workdir as wd
from elax.config import ConfigError
from elax.report.metrics import IDENTITY, method_of
from elax.runs import outputs

OLD_RUN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "old_imp_run")   # lines without IDENTITY
STEPS_PER_EPOCH = 12   # the tiny recipe: 1437 digits at batch 128


def metrics_lines(workdir, level):
    with open(wd.metrics_path(workdir, level)) as f:
        return [json.loads(line) for line in f]


def test_every_metrics_line_says_its_run_level_seed_method_and_sparsity(imp_run):
    workdir, records = imp_run
    for record in records:
        lines = metrics_lines(workdir, record["level"])
        assert [list(line)[:len(IDENTITY)] for line in lines] == [list(IDENTITY)] * 2   # identity first
        assert [{key: line[key] for key in IDENTITY} for line in lines] == [{
            "run": os.path.basename(workdir), "workdir": os.path.realpath(workdir), "level": record["level"],
            "seed": 0, "method": "imp", "sparsity": record["sparsity"]}] * 2
        assert [(line["epoch"], line["step"]) for line in lines] == [(1, STEPS_PER_EPOCH), (2, 2 * STEPS_PER_EPOCH)]


def test_load_metrics_gives_every_line_of_a_run_as_a_row(imp_run):
    workdir, records = imp_run
    rows = report.load_metrics(workdir)
    assert rows == [line for r in records for line in metrics_lines(workdir, r["level"])]
    assert [(row["level"], row["epoch"]) for row in rows] == [(level, epoch) for level in range(4) for epoch in (1, 2)]


def test_old_lines_get_their_identity_from_the_folder_config_and_records():
    rows = report.load_metrics(OLD_RUN)
    assert [{key: row[key] for key in IDENTITY} for row in rows] == [
        {"run": "old_imp_run", "workdir": "/tmp/oldruns/imp_tiny", "level": 0, "seed": 0, "method": "imp",
         "sparsity": 0.0},
        {"run": "old_imp_run", "workdir": "/tmp/oldruns/imp_tiny", "level": 1, "seed": 0, "method": "imp",
         "sparsity": 0.19999999999999996}]
    assert [{k: v for k, v in row.items() if k not in IDENTITY} for row in rows] == [
        metrics_lines(OLD_RUN, 0)[0], metrics_lines(OLD_RUN, 1)[0]]


def copy_old_run(destination, seed):
    """The small files of the old run (its config with `seed`), as a run of an experiment."""
    for name in (wd.CONFIG_FILE, wd.RESULTS_FILE, "level_00/metrics.jsonl", "level_01/metrics.jsonl"):
        os.makedirs(os.path.dirname(os.path.join(destination, name)), exist_ok=True)
        shutil.copy(os.path.join(OLD_RUN, name), os.path.join(destination, name))
    config = wd.read_json(os.path.join(destination, wd.CONFIG_FILE))
    wd.write_json(os.path.join(destination, wd.CONFIG_FILE), {**config, "seed": seed})


def test_an_experiments_rows_name_their_runs_across_seed_folders(tmp_path):
    for seed in (3, 4):
        copy_old_run(tmp_path / "exp" / f"seed_{seed}" / "imp_tiny", seed)
    unfinished = tmp_path / "exp" / "seed_4" / "imp_tiny" / "level_02"   # a level in progress: no record yet
    unfinished.mkdir()
    (unfinished / "metrics.jsonl").write_text('{"epoch": 1, "step": 12}\n{"epoch": 2, "st')   # cut by a kill
    rows = report.load_metrics(str(tmp_path / "exp"))
    assert [(row["run"], row["seed"], row["level"], row["sparsity"]) for row in rows] == [
        ("seed_3/imp_tiny", 3, 0, 0.0), ("seed_3/imp_tiny", 3, 1, 0.19999999999999996),
        ("seed_4/imp_tiny", 4, 0, 0.0), ("seed_4/imp_tiny", 4, 1, 0.19999999999999996),
        ("seed_4/imp_tiny", 4, 2, None)]
    assert report.load_metrics(str(tmp_path / "exp" / "seed_4"))[-1]["run"] == "seed_4/imp_tiny"


def test_run_name_and_method():
    assert report.run_name("/x/exp/seed_12/ett_a_to_b/") == "seed_12/ett_a_to_b"
    assert report.run_name("/x/exp/imp_a") == "imp_a"
    assert report.run_name("/x/seeds_1/imp_a") == "imp_a"
    assert [method_of({"mode": mode, "baseline": {"method": "snip"}}) for mode in ("imp", "transfer", "baseline")] == [
        "imp", "ett", "snip"]


def test_load_metrics_as_a_frame_needs_pandas(monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", types.SimpleNamespace(DataFrame=lambda rows: ("frame", rows)))
    assert report.load_metrics(OLD_RUN, as_frame=True) == ("frame", report.load_metrics(OLD_RUN))
    monkeypatch.setitem(sys.modules, "pandas", None)   # not installed
    with pytest.raises(ImportError, match=r"^load_metrics\(\.\.\., as_frame=True\) needs pandas: pip install pandas$"):
        report.load_metrics(OLD_RUN, as_frame=True)


def test_a_folder_without_runs_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="No elax run in"):
        report.load_metrics(str(tmp_path))


def test_tensorboard_without_tensorboardx_is_a_one_line_config_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)   # not installed
    ctx = types.SimpleNamespace(config=ml_collections.ConfigDict({"tensorboard": True}))
    with pytest.raises(ConfigError) as error:
        outputs.event_writers(ctx, [outputs.Files("/nowhere/checkpoints", "/nowhere/metrics.jsonl")], 0)
    assert str(error.value) == ("config.tensorboard: True needs the tensorboardX package, which is not installed. "
                                "pip install tensorboardX (or leave config.tensorboard off).")
    assert outputs.event_writers(types.SimpleNamespace(config=ml_collections.ConfigDict({"tensorboard": False})),
                               [None, None], 0) == [None, None]
