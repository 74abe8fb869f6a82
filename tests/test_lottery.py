"""IMP with rewinding end to end on digits with a tiny ResNet: counts, rewinding, resumption, tickets."""

import json
import math
import os
import shutil
import time

import jax
import numpy as np
import pytest

from elax import checkpoint, masks, runs, workdir as wd
from elax.runs import jobs
from conftest import quickstart_config, tiny_config

LEVELS = 3
MODEL = "cifar_resnet_14_4"


def test_records_have_the_promised_fields(imp_run):
    _, records = imp_run
    assert [r["level"] for r in records] == list(range(LEVELS + 1))
    for r in records:
        assert r["method"] == "imp" and r["model"] == MODEL and r["seed"] == 0
        assert 0.0 <= r["test_accuracy"] <= 1.0
        assert r["steps"] == 2 * 12


def test_exact_pruned_counts_and_sparsity(imp_run):
    _, records = imp_run
    total = records[0]["prunable_weights"]
    assert records[0]["kept_weights"] == total and records[0]["sparsity"] == 0.0
    for previous, current in zip(records, records[1:]):
        assert current["kept_weights"] == previous["kept_weights"] - math.ceil(0.2 * previous["kept_weights"])
        assert abs(current["sparsity"] - masks.expected_sparsity(current["level"])) < 1e-3


def test_masks_only_shrink_and_match_the_records(imp_run):
    workdir, records = imp_run
    tickets = [runs.load_ticket(workdir, level) for level in range(LEVELS + 1)]
    for ticket, record in zip(tickets, records):
        assert masks.count(ticket.mask)[0] == record["kept_weights"]
    for older, newer in zip(tickets, tickets[1:]):
        for a, b in zip(jax.tree.leaves(older.mask), jax.tree.leaves(newer.mask)):
            assert not np.any(np.asarray(b) & ~np.asarray(a))


def test_level_start_is_mask_times_rewind_weights(imp_run):
    workdir, _ = imp_run
    rewind = checkpoint.load_tree(os.path.join(workdir, "rewind"))
    assert int(rewind["step"]) == 5
    for level in range(1, LEVELS + 1):
        start = checkpoint.load_tree(os.path.join(wd.level_dir(workdir, level), "ticket"))
        assert int(start["step"]) == 5
        expected = jax.tree.map(lambda p, m: np.where(m, p, 0.0), rewind["params"], start["mask"])
        jax.tree.map(np.testing.assert_array_equal, start["params"], expected)
        jax.tree.map(np.testing.assert_array_equal, start["batch_stats"], rewind["batch_stats"])


def test_level_is_pruned_from_the_previous_levels_final_weights(imp_run):
    workdir, _ = imp_run
    exp = runs.setup(tiny_config())
    final = checkpoint.restore_state(os.path.join(wd.level_dir(workdir, 1), "checkpoints"),
                                     exp.template_state)
    next_mask = runs.load_ticket(workdir, 2).mask
    kept = np.concatenate([np.abs(np.asarray(p))[np.asarray(m)].ravel() for p, m in
                           zip(jax.tree.leaves(final.params), jax.tree.leaves(next_mask)) if p.ndim >= 2])
    dropped = np.concatenate([np.abs(np.asarray(p))[np.asarray(m0) & ~np.asarray(m1)].ravel() for p, m0, m1 in
                              zip(jax.tree.leaves(final.params), jax.tree.leaves(final.mask),
                                  jax.tree.leaves(next_mask)) if p.ndim >= 2])
    assert dropped.size > 0 and kept.min() >= dropped.max()


def test_pruned_weights_stay_zero_after_training(imp_run):
    workdir, _ = imp_run
    exp = runs.setup(tiny_config())
    final = checkpoint.restore_state(os.path.join(wd.level_dir(workdir, LEVELS), "checkpoints"),
                                     exp.template_state)
    assert int(final.step) == exp.total_steps
    for p, m in zip(jax.tree.leaves(final.params), jax.tree.leaves(final.mask)):
        assert np.all(np.asarray(p)[~np.asarray(m)] == 0.0)


def test_load_ticket_level_0_is_dense_rewind_state(imp_run):
    workdir, _ = imp_run
    ticket = runs.load_ticket(workdir, 0)
    rewind = checkpoint.load_tree(os.path.join(workdir, "rewind"))
    assert ticket.sparsity == 0.0 and ticket.rewind_step == 5 and ticket.model_name == MODEL
    jax.tree.map(np.testing.assert_array_equal, ticket.params, rewind["params"])
    with pytest.raises(FileNotFoundError, match="has no level 9; levels present: "):
        runs.load_ticket(workdir, 9)
    for level in ("1", 1.0, None, True):
        with pytest.raises(TypeError) as info:
            runs.load_ticket(workdir, level)
        assert str(info.value) == f"level must be a whole number (0 = the dense network), not {level!r}."
    assert runs.load_ticket(workdir, np.int64(0)).sparsity == 0.0


def test_fewer_levels_keep_the_finished_ones_and_say_so(imp_run, tmp_path):
    workdir, reference = imp_run
    copy = str(tmp_path / "run")
    shutil.copytree(workdir, copy)
    lines = []
    assert runs.run_imp(tiny_config(**{"lottery.levels": 1}), copy, log=lines.append) == reference
    assert lines[-1] == ("lottery.levels=1: levels 2-3, finished before, are kept (results and reports include "
                         "them; delete their level_* folders to drop them)")


def test_load_ticket_of_an_experiment_names_its_runs(tmp_path):
    for run in ("seed_1/imp_b", "seed_0/imp_b", "seed_0/ett_a_to_b", "seed_0/report/x"):
        wd.write_json(str(tmp_path / run / wd.CONFIG_FILE) if run.count("/") == 1 else str(tmp_path / run), {})
    with pytest.raises(FileNotFoundError) as info:
        runs.load_ticket(str(tmp_path), 1)
    assert str(info.value) == (f"{str(tmp_path)!r} is not an elax run directory (no config.json). It holds the "
                               "runs seed_0/ett_a_to_b, seed_0/imp_b, seed_1/imp_b: pass one of them.")


def test_interrupted_run_resumes_to_identical_results(imp_run, tmp_path, monkeypatch):
    reference_dir, reference = imp_run
    saves = {"n": 0}
    real_save = checkpoint.save_state

    def dying_save(directory, state):
        real_save(directory, state)
        saves["n"] += 1
        if saves["n"] == 3:  # level 1, after its first epoch (level 0 saved after epochs 1 and 2)
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save_state", dying_save)
    workdir = str(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        runs.run_imp(tiny_config(), workdir, log=lambda _: None)
    partial = wd.load_results(workdir)
    assert [r["level"] for r in partial] == [0]
    monkeypatch.setattr(checkpoint, "save_state", real_save)
    resumed = runs.run_imp(tiny_config(), workdir, log=lambda _: None)
    assert resumed == reference
    with open(os.path.join(wd.level_dir(workdir, 1), "metrics.jsonl")) as f:
        assert [int(__import__("json").loads(line)["epoch"]) for line in f] == [1, 2]


def test_a_run_stopped_by_a_failing_neighbour_keeps_its_epoch_and_resumes_identically(imp_run, tmp_path):
    """Side by side (runs.jobs), a failure elsewhere stops a run at its next epoch end with a checkpoint there,
    even when no save was due, and the same run started again ends with the results of an uninterrupted one."""
    _, reference = imp_run
    workdir = str(tmp_path / "run")
    config = tiny_config(**{"train.checkpoint_every_secs": 1e9})   # no save is due before the level's end

    def fails_once_the_run_trains(log):
        deadline = time.time() + 120
        while not os.path.isdir(wd.rewind_dir(workdir)) and time.time() < deadline:   # step 5 of epoch 1
            time.sleep(0.005)
        raise ValueError("boom")

    graph = [jobs.Job("imp", "IMP", lambda log: runs.run_imp(config, workdir, log)),
             jobs.Job("bad", "fails", fails_once_the_run_trains)]
    with pytest.raises(ValueError, match="boom"):
        jobs.run_jobs(graph, workers=2, log=lambda _: None)
    level = len(wd.load_results(workdir))          # the level in progress when the stop came (0 unless slow)
    with open(wd.metrics_path(workdir, level)) as f:
        last_step = json.loads(f.readlines()[-1])["step"]
    assert checkpoint.latest_step(wd.checkpoints_dir(workdir, level)) == last_step   # no epoch lost
    assert runs.run_imp(config, workdir, log=lambda _: None) == reference


def test_resume_refuses_a_different_config_and_keeps_results(imp_run):
    workdir, reference = imp_run
    with pytest.raises(ValueError, match=r"different config \(lottery.prune_fraction: 0.2 -> 0.5\)"):
        runs.run_imp(tiny_config(**{"lottery.prune_fraction": 0.5}), workdir)
    assert wd.load_results(workdir) == reference


def test_extending_levels_continues_the_run(imp_run, tmp_path):
    workdir, reference = imp_run
    import shutil
    copy = str(tmp_path / "copy")
    shutil.copytree(workdir, copy)
    records = runs.run_imp(tiny_config(**{"lottery.levels": LEVELS + 1}), copy, log=lambda _: None)
    assert records[:-1] == reference
    assert records[-1]["level"] == LEVELS + 1
    assert abs(records[-1]["sparsity"] - masks.expected_sparsity(LEVELS + 1)) < 1e-3


@pytest.mark.parametrize("key, value, message", [
    ("lottery.levels", -1, "lottery.levels: must be >= 0"),
    ("lottery.prune_fraction", 1.0, r"lottery.prune_fraction: must be in \(0, 1\)"),
    ("lottery.prune_fraction", 0.0, r"lottery.prune_fraction: must be in \(0, 1\)"),
    ("model.name", "cifar_resnet_21", "6n\\+2"),
    ("data.name", "imagenet", "unknown dataset 'imagenet'"),
])
def test_bad_config_fails_before_any_work(tmp_path, key, value, message):
    workdir = str(tmp_path / "run")
    with pytest.raises(ValueError, match=message):
        runs.run_imp(tiny_config(**{key: value}), workdir)
    assert not os.path.exists(workdir)


def test_quickstart_recipe_learns_digits(tmp_path):
    """The dense level of configs/quickstart.py (as shipped) reaches >= 90% test accuracy on digits."""
    config = quickstart_config()
    config.mode, config.lottery.levels, config.progress = "imp", 0, False
    (record,) = runs.run_imp(config, str(tmp_path / "quickstart"), log=lambda _: None)
    assert record["model"] == "cifar_resnet_14_8" and record["sparsity"] == 0.0
    assert record["test_accuracy"] >= 0.90


def test_a_layer_emptied_by_global_pruning_is_said_not_refused(imp_run):
    """Global pruning may empty a conv inside a residual block (the quickstart's level 5 does): survivable, so
    the level trains and the log says which layer."""
    from elax.runs import imp
    workdir, _ = imp_run
    ctx = runs.setup(tiny_config())
    mask = runs.load_ticket(workdir, 3).mask
    mask = {**mask, "stage3_block0": {**mask["stage3_block0"],
                                      "conv2": {"kernel": np.zeros_like(mask["stage3_block0"]["conv2"]["kernel"])}}}
    lines = []
    imp._warn_empty_layers(ctx, mask, 4, lines.append)
    assert lines == ["warning: level 4 prunes every weight of stage3_block0/conv2/kernel (global magnitude pruning "
                     "emptied it); config.lottery.scope=layer keeps weights in every layer."]
    imp._warn_empty_layers(ctx, runs.load_ticket(workdir, 3).mask, 4, lines.append)
    assert len(lines) == 1
