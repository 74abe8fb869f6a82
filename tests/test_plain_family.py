"""A family without BatchNorm, trained with AdamW and a warmup + cosine schedule, through the whole E-LTH
experiment: IMP levels on a source and a deeper target, the transfer source -> target, and the SNIP and random
baselines (tests/plain_family.py)."""

import os

import jax
import numpy as np
import pytest

from elax import masks, runs, workdir as wd
import plain_family  # noqa: F401  (registers the "plain" family)
from conftest import tiny_config

pytestmark = pytest.mark.smoke   # the first look: python -m pytest -m smoke

PRUNE_FRACTION = 0.5


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("plain"))
    config = tiny_config(**{
        "mode": "experiment", "model.name": "plain_2", "experiment.source_model": "plain_2",
        "experiment.target_models": ("plain_3",), "experiment.baselines": ("random", "snip"),
        "train.optimizer": "adamw", "train.schedule": "cosine", "train.lr": 0.02, "train.weight_decay": 0.05,
        "train.warmup_epochs": 0.25, "train.milestones": (), "lottery.levels": 2,
        "lottery.prune_fraction": PRUNE_FRACTION, "baseline.snip_batches": 2, "train.epochs": 1})
    runs.run_experiment(config, workdir, log=lambda _: None)
    return workdir


def _records(workdir, run):
    return {r["level"]: r for r in wd.load_results(os.path.join(workdir, run))}


def test_every_run_trains_without_batch_stats_and_with_the_adamw_recipe(experiment):
    names = ("imp_plain_2", "imp_plain_3", "ett_plain_2_to_plain_3", "random_plain_3", "snip_plain_3")
    ids = set()
    for name in names:
        config = wd.read_json(os.path.join(experiment, name, wd.CONFIG_FILE))
        assert (config["train"]["optimizer"], config["train"]["schedule"]) == ("adamw", "cosine"), name
        ids |= {r["recipe_id"] for r in _records(experiment, name).values()}
    assert len(ids) == 1   # transfers and baselines inherit the optimizer and schedule of their IMP run
    recipe = wd.recipe(wd.read_json(os.path.join(experiment, names[0], wd.CONFIG_FILE)))
    assert (recipe["train.optimizer"], recipe["train.schedule"], recipe["train.warmup_epochs"]) == (
        "adamw", "cosine", 0.25)
    for level in (0, 2):
        ticket = runs.load_ticket(os.path.join(experiment, "imp_plain_3"), level)
        assert ticket.batch_stats == {}
    dense = _records(experiment, "imp_plain_2")[0]
    assert dense["test_accuracy"] > 0.7   # it learns (chance: 0.1; 0.86 measured)


def test_imp_levels_prune_exactly_and_baselines_match_them(experiment):
    for model in ("plain_2", "plain_3"):
        records = _records(experiment, f"imp_{model}")
        assert sorted(records) == [0, 1, 2]
        total = records[0]["prunable_weights"]
        kept = total
        for level in (1, 2):
            kept -= -(-kept // 2)   # ceil(0.5 * remaining) pruned per level
            assert records[level]["kept_weights"] == kept
        if model == "plain_3":
            for method in ("random", "snip"):
                baseline = _records(experiment, f"{method}_plain_3")
                assert {level: r["kept_weights"] for level, r in baseline.items()} == {
                    level: records[level]["kept_weights"] for level in (1, 2)}


def test_the_transferred_ticket_copies_the_source_blocks(experiment):
    source = runs.load_ticket(os.path.join(experiment, "imp_plain_2"), 2)
    moved = runs.load_ticket(os.path.join(experiment, "ett_plain_2_to_plain_3"), 2)
    assert moved.model_name == "plain_3" and moved.batch_stats == {}
    plan = {"stage1_block0": "stage1_block0", "stage1_block1": "stage1_block1", "stage1_block2": "stage1_block1"}
    for target, origin in plan.items():   # "append": B0 B1 B1
        for tree in ("mask", "params"):
            jax.tree.map(np.testing.assert_array_equal, getattr(moved, tree)[target], getattr(source, tree)[origin])
    ett = _records(experiment, "ett_plain_2_to_plain_3")
    assert sorted(ett) == [0, 1, 2] and ett[2]["kept_weights"] == masks.count(moved.mask, moved._prunable())[0]
