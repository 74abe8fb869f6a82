"""Every command a file in configs/ documents passes its mode's checks as written: the part after `:`, the
`--config.KEY=VALUE` overrides. Nothing is trained; a config that no longer loads, or that its own command no longer
completes, fails here rather than in a user's first minute."""

import glob
import importlib
import os
import re
import sys

import pytest

from elax.config import ConfigError
from elax.runs import modes

pytestmark = pytest.mark.smoke

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.py")))


def documented_commands(path: str) -> list[tuple[str | None, dict]]:
    """(part, {key: value}) of each `python main.py --config configs/NAME.py[:part] ...` in the file."""
    name = os.path.basename(path)[:-3]
    text = open(path).read().replace("\\\n", " ")
    pattern = rf"python main\.py --config configs/{name}\.py(?::(\w+))?([^\n]*)"
    return [(match.group(1), dict(re.findall(r"--config\.([\w.]+)=(\S+)", match.group(2))))
            for match in re.finditer(pattern, text)]


def with_overrides(config, overrides: dict):
    for dotted, value in overrides.items():
        *sections, key = dotted.split(".")
        node = config
        for section in sections:
            node = node[section]
        node[key] = type(node[key])(value)
    return config


@pytest.fixture(scope="module")
def config_modules():
    folder, names = os.path.join(ROOT, "configs"), [os.path.basename(p)[:-3] for p in CONFIGS]
    sys.path.insert(0, folder)   # as main.py does: configs import the files beside them
    try:
        yield {name: importlib.import_module(name) for name in names}
    finally:
        sys.path.remove(folder)
        for name in names:   # top-level names such as `mlp` and `transfer` must not outlive these tests
            sys.modules.pop(name, None)


def test_every_config_documents_its_command():
    undocumented = [os.path.basename(p) for p in CONFIGS if not documented_commands(p)]
    assert undocumented == []
    assert len(CONFIGS) >= 14


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.basename(p)[:-3])
def test_documented_commands_pass_their_checks(path, config_modules):
    module = config_modules[os.path.basename(path)[:-3]]
    for part, overrides in documented_commands(path):
        config = with_overrides(module.get_config() if part is None else module.get_config(part), overrides)
        modes.check(config)   # ConfigError naming the key otherwise


def test_sparse_evidence_config_is_the_fashion_recipe_plus_its_baselines(config_modules):
    """configs/elth_fashion_sparse.py builds on configs/elth_fashion.py: the same training, pruning and models, so
    its IMP and ETT runs are the same recipe; only the baselines (and, for nm, the structure and levels) differ."""
    fashion = config_modules["elth_fashion"].get_config().to_dict()
    dst = config_modules["elth_fashion_sparse"].get_config("dst").to_dict()
    nm = config_modules["elth_fashion_sparse"].get_config("nm").to_dict()
    for section in ("data", "train", "model"):
        assert dst[section] == fashion[section] and nm[section] == fashion[section]
    assert dst["experiment"]["baselines"] == ("random", "set", "rigl")
    assert (dst["baseline"]["distribution"], dst["baseline"]["dst_every"]) == ("erk", 25)
    assert (nm["lottery"]["structure"], nm["lottery"]["levels"], nm["experiment"]["baselines"]) == ("1:4", 2, ())


def test_an_experiment_that_replicates_no_block_refuses_permuted_replica_masks_before_training(config_modules):
    config = config_modules["elth_fashion_mlp"].get_config("squeeze")   # drop_last 4x300 -> 2x300: no replicas
    config.transfer.replica_masks = "permute"
    with pytest.raises(ConfigError, match=r"config.transfer.replica_masks: 'permute' shuffles the masks of replicated "
                                          r"blocks, and 'drop_last' from mlp_4x300 to mlp_2x300 replicates none"):
        modes.check(config)


def test_an_nm_experiment_refuses_baselines_that_would_be_labelled_nm(config_modules):
    config = config_modules["elth_fashion_sparse"].get_config("nm")
    config.experiment.baselines = ("random",)
    with pytest.raises(ConfigError, match=r"config.experiment.baselines: prune without a structure, and this "
                                          r"experiment's tickets are 1:4"):
        modes.check(config)
