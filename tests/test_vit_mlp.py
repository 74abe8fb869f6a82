"""Vision Transformers and MLPs (elax.models.vit, elax.models.mlp): parameter counts by hand, the transfer plans of
one-stage families, tickets moved block by block, and an IMP level and an ETT level of each on digits."""

import math

import jax
import numpy as np
import pytest

from elax import masks, models, runs, transfer
from conftest import random_variables, tiny_config


def num_params(name, input_shape, num_classes=10):
    model = models.get_model(name, num_classes=num_classes)
    shapes = models.variable_shapes(model, input_shape)
    assert set(shapes) == {"params"}   # no BatchNorm, nor any other collection
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(shapes["params"]))


def vit_count(depth, dim, patch, image=32, channels=3, classes=10, token=True):
    tokens = (image // patch) ** 2 + token
    embed = patch * patch * channels * dim + dim + token * dim + tokens * dim
    block = 2 * dim + (4 * dim * dim + 4 * dim) + 2 * dim + (dim * 4 * dim + 4 * dim) + (4 * dim * dim + dim)
    return embed + depth * block + 2 * dim + dim * classes + classes


@pytest.mark.parametrize("name, image, channels, classes, token", [
    ("vit_6_64_p4", 32, 3, 10, True), ("vit_4_64_p7", 28, 1, 10, True), ("vit_2_96_p8_h3", 32, 3, 100, True),
    ("vit_3_48_p4_gap", 16, 3, 10, False)])
def test_vit_parameters_count_as_by_hand(name, image, channels, classes, token):
    depth, dim, patch = (int(x.lstrip("p")) for x in name.split("_")[1:4])
    assert num_params(name, (image, image, channels), classes) == vit_count(depth, dim, patch, image, channels,
                                                                            classes, token)
    assert vit_count(6, 64, 4) == 308_042   # the hand formula itself, once in numbers


@pytest.mark.parametrize("name, widths", [("mlp_300_100", (300, 100)), ("mlp_3x64", (64, 64, 64)),
                                          ("mlp_100", (100,))])
def test_mlp_parameters_count_as_by_hand(name, widths):
    sizes = (28 * 28, *widths, 10)
    assert num_params(name, (28, 28, 1)) == sum(a * b + b for a, b in zip(sizes, sizes[1:]))
    assert num_params("mlp_300_100", (28, 28, 1)) == 266_610   # LeNet-300-100 (Frankle & Carbin 2019)


def test_model_names_read_back():
    for name, back in (("vit_6_64_p4", "vit_6_64_p4"), ("vit_6_64_p4_h2", "vit_6_64_p4"),
                       ("vit_6_64_p4_h4_gap", "vit_6_64_p4_h4_gap"), ("mlp_256_256", "mlp_2x256"),
                       ("mlp_300_100", "mlp_300_100")):
        assert models.model_name(models.get_model(name)) == back
    with pytest.raises(ValueError, match=r"ViT width 64 is not divisible by its 3 heads"):
        models.get_model("vit_6_64_p4_h3")


PLANS = [
    ("vit_4_64_p4", "vit_6_64_p4", "append", "B0 B1 B2 B3 B0 B1", "0:0,4;1:1,5;2:2;3:3"),
    ("vit_4_64_p4", "vit_6_64_p4", "interpolate", "B0 B0 B1 B1 B2 B3", "0:0,1;1:2,3;2:4;3:5"),
    ("vit_6_64_p4", "vit_8_64_p4", "append", "B0 B1 B2 B3 B4 B5 B0 B1", "0:0,6;1:1,7;2:2;3:3;4:4;5:5"),
    ("vit_6_64_p4", "vit_8_64_p4", "interpolate", "B0 B0 B1 B1 B2 B3 B4 B5", "0:0,1;1:2,3;2:4;3:5;4:6;5:7"),
    ("vit_4_64_p4", "vit_8_64_p4", "append", "B0 B1 B2 B3 B0 B1 B2 B3", "0:0,4;1:1,5;2:2,6;3:3,7"),
    ("vit_4_64_p4", "vit_8_64_p4", "interpolate", "B0 B0 B1 B1 B2 B2 B3 B3", "0:0,1;1:2,3;2:4,5;3:6,7"),
    ("vit_8_64_p4", "vit_4_64_p4", "drop_last", "B0 B1 B2 B3", "0:0;1:1;2:2;3:3"),
    ("vit_8_64_p4", "vit_4_64_p4", "interleave", "B0 B2 B4 B6", "0:0;2:1;4:2;6:3"),
    ("vit_6_64_p4", "vit_4_64_p4", "interleave", "B0 B1 B3 B4", "0:0;1:1;3:2;4:3"),
]


@pytest.mark.parametrize("source, target, strategy, blocks, mapping", PLANS)
def test_one_stage_plans_free_every_block(source, target, strategy, blocks, mapping):
    plan = transfer.plan(source, target, strategy)
    assert str(plan).splitlines()[1] == f"  stage 1: {blocks}"
    assert plan.to_string() == mapping and transfer.plan(source, target, mapping).mapping == plan.mapping
    assert plan.fixed == (0,)   # no block is pinned: the shapes say all are alike


def test_transfers_across_families_widths_and_fixed_mlp_layers_are_refused():
    for source, target, message in [
        ("vit_4_64_p4", "cifar_resnet_20", "Cannot transfer between model families"),
        ("vit_4_64_p4", "vit_6_96_p4", "Cannot transfer between different widths"),
        ("mlp_300_100", "mlp_3x300", r"stage 1 has fixed blocks \(True, True\) vs \(True, False, False\)"),
        ("mlp_2x64", "mlp_64_32", "fixed blocks"),
    ]:
        with pytest.raises(ValueError, match=message):
            transfer.check_transferable(source, target)
            transfer.plan(source, target)
    assert str(transfer.plan("mlp_2x64", "mlp_4x64")).splitlines()[1] == "  stage 1: B0 B1 B1 B1"


@pytest.mark.parametrize("source, target, strategy", [("vit_2_8_p4", "vit_5_8_p4", "append"),   # B0 B1 B0 B1 B0
                                                      ("vit_5_8_p4", "vit_2_8_p4", "interleave"),
                                                      ("mlp_3x32", "mlp_5x32", "append")])
def test_every_target_block_is_its_source_block(source, target, strategy):
    model = models.get_model(source)
    params = random_variables(model, (8, 8, 1))["params"]
    family = models.family_of(model)
    mask = masks.build(params)
    from elax import pruning
    mask = pruning.prune_magnitude(params, mask, 0.5, family.prunable)
    from elax.ticket import Ticket
    ticket = Ticket(model, source, mask, masks.apply(params, mask), {}, level=1, rewind_step=3)
    moved = transfer.transfer_ticket(ticket, target, strategy)
    plan = transfer.plan(source, target, strategy)
    assert moved.batch_stats == {} and moved.model_name == target
    for b, j in enumerate(plan.mapping[1]):
        for tree in ("params", "mask"):
            jax.tree.map(np.testing.assert_array_equal, getattr(moved, tree)[f"stage1_block{b}"],
                         getattr(ticket, tree)[f"stage1_block{j}"])
    for key in [k for k in params if not k.startswith("stage")]:   # embeddings, norms and head pass through
        jax.tree.map(np.testing.assert_array_equal, moved.params[key], ticket.params[key])


@pytest.mark.parametrize("source, target", [("vit_1_8_p4", "vit_2_8_p4"), ("mlp_2x32", "mlp_3x32")])
def test_an_imp_level_and_an_ett_level_on_digits(tmp_path, source, target):
    overrides = {"model.name": source, "lottery.levels": 1, "train.optimizer": "adamw", "train.lr": 3e-3,
                 "train.weight_decay": 0.01, "train.milestones": (), "train.epochs": 1}
    imp = runs.run_imp(tiny_config(**overrides), str(tmp_path / "imp"), log=lambda _: None)
    total = imp[0]["prunable_weights"]
    assert [r["level"] for r in imp] == [0, 1] and imp[1]["kept_weights"] == total - math.ceil(0.2 * total)
    assert imp[0]["test_accuracy"] > 0.2   # it learns (chance: 0.1)
    ticket = runs.load_ticket(str(tmp_path / "imp"), 1)
    assert ticket.batch_stats == {} and "batch_stats" not in models.variable_shapes(ticket.model, (8, 8, 1))
    config = tiny_config(**{**overrides, "mode": "transfer", "model.name": target,
                            "transfer.source": str(tmp_path / "imp"), "transfer.levels": (1,)})
    (ett,) = runs.run_transfer(config, str(tmp_path / "ett"), log=lambda _: None)
    moved = runs.load_ticket(str(tmp_path / "ett"), 1)
    assert (ett["level"], ett["method"], ett["source_model"]) == (1, "ett", source)
    assert ett["kept_weights"] == masks.count(moved.mask, moved._prunable())[0] > imp[1]["kept_weights"]
    assert moved.batch_stats == {}
