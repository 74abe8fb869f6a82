"""The config schema (elax.config): every key declared once with its meaning, recipe ids of runs made before the
schema stay the same, and a run written by an earlier elax (tests/data/old_imp_run, made at 1863e71) resumes."""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from elax import checkpoint, config as config_lib, exits, runs, workdir as wd
from conftest import ROOT, tiny_config

pytestmark = pytest.mark.smoke   # the first look: python -m pytest -m smoke

DATA = os.path.join(ROOT, "tests", "data")


def test_every_key_has_a_meaning_and_the_defaults_build_the_config():
    config = config_lib.default_config().to_dict()
    flat = wd.flatten(config)
    assert sorted(flat) == sorted(config_lib.KEYS)
    for name, key in config_lib.KEYS.items():
        assert key.doc and key.recipe in (None, config_lib.ALWAYS, config_lib.STREAMED, config_lib.IF_SET), name
        assert flat[name] == (list(key.default) if isinstance(key.default, tuple) else key.default)
    assert {n for n, k in config_lib.KEYS.items() if k.run_path} == {"transfer.source", "baseline.reference"}
    assert {n for n, k in config_lib.KEYS.items() if k.host_local} == {"data.dir"}
    assert config_lib.unread_prefixes("imp") == ("transfer.", "baseline.")
    assert config_lib.unread_prefixes("baseline") == ("transfer.",) and config_lib.unread_prefixes("experiment") == ()


def test_recipe_ids_of_runs_made_before_the_schema_are_unchanged():
    with open(os.path.join(DATA, "old_configs.json")) as f:
        old = json.load(f)   # config.json contents written at 1863e71, each with the recipe id it had then
    assert len(old) == 11 and len({c["recipe_id"] for c in old.values()}) == 5
    for name, config in old.items():
        assert wd.recipe_id(config) == config["recipe_id"], name
    # Today's defaults are the same recipe as then, and a key added since changes the id only when set.
    today = config_lib.default_config()
    assert wd.recipe_id(today.to_dict()) == old["cifar_resnet_default"]["recipe_id"]
    today.train.optimizer = "adamw"
    assert wd.recipe_id(today.to_dict()) != old["cifar_resnet_default"]["recipe_id"]
    assert wd.recipe(today.to_dict())["train.optimizer"] == "adamw"


def test_a_run_of_an_earlier_elax_resumes(tmp_path):
    workdir = str(tmp_path / "old")
    shutil.copytree(os.path.join(DATA, "old_imp_run"), workdir)
    stored = wd.read_json(os.path.join(workdir, wd.CONFIG_FILE))
    config = tiny_config(**{"model.name": "cifar_resnet_8_2", "lottery.levels": 1, "train.epochs": 1,
                            "lottery.rewind_steps": 2})
    assert wd.recipe_id(config.to_dict()) == stored["recipe_id"]
    ctx = runs.setup(config)
    wd.claim(workdir, config.to_dict(), {"classes": 10, "train_images": 1437, "test_images": 360})   # no refusal
    state = checkpoint.restore_state(wd.checkpoints_dir(workdir, 1), ctx.template_state)
    ticket = runs.load_ticket(workdir, 1)
    assert int(state.step) == ctx.total_steps and ticket.rewind_step == 2
    for a, b in zip(jax.tree.leaves(state.mask), jax.tree.leaves(ticket.mask)):
        np.testing.assert_array_equal(a, b)
    records = wd.load_results(workdir)
    assert [r["level"] for r in records] == [0, 1] and records[1]["recipe_id"] == stored["recipe_id"]


def test_the_command_line_spells_config_keys_as_flags():
    assert exits.as_flags("config.train.lr: must be > 0; set config.data.dir=DIR") == (
        "--config.train.lr: must be > 0; set --config.data.dir=DIR")
    assert exits.as_flags("--config.train.lr and /runs/a/config.json and myconfig.train.lr") == (
        "--config.train.lr and /runs/a/config.json and myconfig.train.lr")
    top_level = [name for name in config_lib.KEYS if "." not in name]
    assert len(top_level) == 4 and exits.as_flags(", ".join(f"config.{name}" for name in top_level)) == (
        ", ".join(f"--config.{name}" for name in top_level))
    assert exits.as_flags("see config.json; config.seeds") == "see config.json; config.seeds"


@pytest.mark.parametrize("key, value, message", [
    ("seed", 2**70, "config.seed: must be a whole number in [0, 4294967295], got 1180591620717411303424."),
    ("train.warmup_epochs", float("inf"), "config.train.warmup_epochs: must be a finite number >= 0, got inf."),
    ("train.warmup_epochs", 200.0, "config.train.warmup_epochs: 200.0 is longer than the training (160 epochs)."),
    ("train.final_lr", 0.5, "config.train.final_lr: must be a number in [0, train.lr = 0.1], got 0.5."),
    ("train.label_smoothing", 1.0, "config.train.label_smoothing: must be in [0, 1), got 1.0."),
    ("train.adam_b2", 1.0, "config.train.adam_b2: must be in [0, 1), got 1.0."),
    ("mask_update.every", 0, "config.mask_update.every: must be a whole number of steps >= 1, got 0."),
    ("mask_update.method", "rigl2", "config.mask_update.method: unknown mask update 'rigl2'"),
])
def test_new_keys_are_checked(key, value, message):
    config = config_lib.default_config()
    section, _, name = key.rpartition(".")
    (config[section] if section else config)[name] = value
    with pytest.raises(config_lib.ConfigError) as error:
        runs.check(config)
    assert str(error.value).startswith(message) and error.value.key == key
