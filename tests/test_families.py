"""The model-family protocol and the registries: a family, a baseline or a strategy added in one place is picked
up by the registry lookups, the config checks and elastic transfer (shown with the tests' toy family)."""

import math

import jax
import numpy as np
import pytest

from elax import config as config_lib, masks, models, runs, transfer
from elax.runs import BASELINES, MODES
from elax.ticket import Ticket
import toy_family  # noqa: F401  (registers the "toy" family)
from conftest import random_variables


def test_registry_builds_names_and_inverts_them():
    model = models.get_model("toy_2-3_w4-4", num_classes=5)
    assert (model.stage_sizes, model.widths, model.num_classes) == ((2, 3), (4, 4), 5)
    assert models.model_name(model) == "toy_2-3_w4-4"
    assert models.model_name(models.get_model("toy_2-3")) == "toy_2-3"
    assert models.family_of("toy_2-3") is toy_family.FAMILY
    assert models.family_of(models.get_model("cifar_resnet_20")).name == "cifar_resnet"
    with pytest.raises(ValueError, match=r"Unknown model 'toy'\. Valid names: .*toy_\{n1\}-\{n2\}"):
        models.get_model("toy")


def test_fixed_blocks_follow_from_shapes():
    # Stage 1 block 0 maps 3 input channels to 4; stage 2 keeps 4 channels, so its block 0 is free.
    assert models.fixed_blocks(models.get_model("toy_2-3_w4-4")) == {1: (True, False), 2: (False, False, False)}
    assert models.fixed_blocks(models.get_model("toy_2-2")) == {1: (True, False), 2: (True, False)}
    # CIFAR ResNets pin block 0 of every stage (E-LTH), although stage 1's keeps its shape.
    assert models.fixed_blocks(models.get_model("cifar_resnet_20_4")) == {s: (True, False, False) for s in (1, 2, 3)}
    shapes = models.block_shapes(models.get_model("cifar_resnet_20_4"))
    assert shapes[(2, 0)] == ((32, 32, 4), (16, 16, 8)) and shapes[(2, 1)] == ((16, 16, 8), (16, 16, 8))


def test_a_free_first_block_may_be_replicated():
    p = transfer.plan("toy_2-2_w4-4", "toy_2-5_w4-4", "append")
    assert p.fixed == (1, 0)
    assert p.mapping == {1: (0, 1), 2: (0, 1, 0, 1, 0)}
    assert transfer.plan("toy_2-2_w4-4", "toy_2-5_w4-4", "interpolate").mapping[2] == (0, 0, 0, 1, 1)
    assert transfer.plan("toy_2-5_w4-4", "toy_2-2_w4-4", "interleave").mapping[2] == (0, 2)
    with pytest.raises(ValueError, match=r"Stage 1, target block 0 \(a fixed block"):
        transfer.plan("toy_2-2_w4-4", "toy_2-3_w4-4", "1:0;0:1|0:0,2;1:1")


def test_transfer_ticket_on_the_toy_family_copies_every_unit():
    source = models.get_model("toy_2-2_w4-4")
    variables = random_variables(source, (4, 4, 3))
    mask = masks.build(variables["params"])
    ticket = Ticket(source, "toy_2-2_w4-4", mask, variables["params"], variables["batch_stats"])
    moved = transfer.transfer_ticket(ticket, "toy_2-5_w4-4")
    assert moved.model_name == "toy_2-5_w4-4"
    for b, j in enumerate((0, 1, 0, 1, 0)):
        for tree, source_tree in ((moved.params, ticket.params), (moved.batch_stats, ticket.batch_stats),
                                  (moved.mask, ticket.mask)):
            jax.tree.map(np.testing.assert_array_equal, tree[f"stage2_block{b}"], source_tree[f"stage2_block{j}"])
    jax.tree.map(np.testing.assert_array_equal, moved.params["head"], ticket.params["head"])


def test_family_declares_prunable_exclusions():
    assert toy_family.FAMILY.prune_exclude == ("head",)
    assert models.family_of("cifar_resnet_20").prune_exclude == ()


def test_a_registered_baseline_is_validated_and_used():
    config = config_lib.default_config()
    config.mode, config.baseline.reference, config.baseline.method = "baseline", "/somewhere", "keep_all"
    with pytest.raises(ValueError, match=r"config.baseline.method: unknown baseline 'keep_all'"):
        runs.check(config)
    BASELINES.register("keep_all", lambda ctx, m: (m.dense.params, m.dense.batch_stats, m.dense.mask))
    try:
        runs.check(config)
    finally:
        BASELINES.remove("keep_all")


def test_a_registered_strategy_is_validated_and_planned():
    reverse = lambda k, m: tuple(reversed(range(k)))[:m]
    config = config_lib.default_config()
    config.mode, config.experiment.source_model = "experiment", "cifar_resnet_32"
    config.experiment.target_models, config.transfer.strategy = ("cifar_resnet_20",), "reverse"
    with pytest.raises(ValueError, match=r"config.transfer.strategy: 'reverse' cannot move cifar_resnet_32 to "
                                         r"cifar_resnet_20: Unknown strategy 'reverse'"):
        runs.check(config)
    transfer.STRATEGIES.register("reverse", transfer.Strategy("squeeze", reverse))
    try:
        runs.check(config)
        assert transfer.plan("cifar_resnet_32", "cifar_resnet_20", "reverse").mapping[1] == (0, 4, 3)
    finally:
        transfer.STRATEGIES.remove("reverse")


def test_modes_come_from_the_mode_registry():
    assert MODES.names() == ("imp", "transfer", "baseline", "experiment", "report")
    config = config_lib.default_config()
    config.mode = "imq"
    with pytest.raises(ValueError, match=r"config.mode: unknown mode 'imq' \(did you mean 'imp'\?\). Valid: imp, "
                                         r"transfer, baseline, experiment, report."):
        runs.check(config)


# -- CIFAR VGG and ImageNet ResNets ----------------------------------------------------------------------------------

def num_params(name, num_classes=10):
    model = models.get_model(name, num_classes=num_classes)
    shapes = models.variable_shapes(model, models.family_of(model).input_shape)
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(shapes["params"]))


@pytest.mark.parametrize("name, count", [
    ("imagenet_resnet_18", 11_689_512), ("imagenet_resnet_34", 21_797_672), ("imagenet_resnet_50", 25_557_032),
    ("imagenet_resnet_101", 44_549_160), ("imagenet_resnet_152", 60_192_808),
])
def test_imagenet_resnet_parameter_counts_equal_torchvisions(name, count):
    assert num_params(name, num_classes=1000) == count


def vgg_params(depth, width=64, classes=10):
    """conv3x3 with bias + BN (scale, bias) per unit, dense head: counted from the plan by hand."""
    from elax.models.cifar_vgg import PLANS
    total, cin = 0, 3
    for stage in PLANS[depth]:
        for c in stage:
            c = c * width // 64
            total += 9 * cin * c + c + 2 * c
            cin = c
    return total + cin * classes + classes


@pytest.mark.parametrize("depth, stage_sizes", [(11, (1, 1, 2, 2, 2)), (13, (2, 2, 2, 2, 2)), (16, (2, 2, 3, 3, 3)),
                                                (19, (2, 2, 4, 4, 4))])
def test_vgg_shapes_and_parameter_counts(depth, stage_sizes):
    model = models.get_model(f"cifar_vgg_{depth}")
    assert models.stage_sizes(model) == stage_sizes
    assert num_params(f"cifar_vgg_{depth}") == vgg_params(depth)
    assert num_params(f"cifar_vgg_{depth}_8") == vgg_params(depth, width=8)
    assert models.model_name(models.get_model(f"cifar_vgg_{depth}_8")) == f"cifar_vgg_{depth}_8"
    # Channel-changing first convs are fixed; the 512 -> 512 last stage is free throughout.
    fixed = models.fixed_blocks(model)
    assert [f[0] for f in fixed.values()] == [True, True, True, True, False]
    assert not any(b for f in fixed.values() for b in f[1:])


def test_vgg_classifier_is_not_pruned_and_imagenet_resnets_is():
    vgg = models.get_model("cifar_vgg_11_8")
    params = models.variable_shapes(vgg, (32, 32, 3))["params"]
    prunable = set(masks.prunable_leaves(params, models.family_of(vgg).prunable))
    assert "head/kernel" not in prunable and "stage1_block0/conv/kernel" in prunable
    assert not any(name.endswith("bias") for name in prunable)
    resnet = models.variable_shapes(models.get_model("imagenet_resnet_18_8"), (32, 32, 3))["params"]
    assert "head/kernel" in masks.prunable_leaves(resnet, models.family_of("imagenet_resnet_18").prunable)


# (source, target, strategy, mapping per stage): the paper's ImageNet and VGG transfers.
FAMILY_PLANS = [
    ("imagenet_resnet_18", "imagenet_resnet_26", "append",
     {1: (0, 1), 2: (0, 1, 1), 3: (0, 1, 1, 1), 4: (0, 1, 1)}, "0:0;1:1|0:0;1:1,2|0:0;1:1,2,3|0:0;1:1,2"),
    ("imagenet_resnet_26", "imagenet_resnet_34", "append",
     {1: (0, 1, 1), 2: (0, 1, 2, 1), 3: (0, 1, 2, 3, 1, 2), 4: (0, 1, 2)},
     "0:0;1:1,2|0:0;1:1,3;2:2|0:0;1:1,4;2:2,5;3:3|0:0;1:1;2:2"),
    ("imagenet_resnet_18", "imagenet_resnet_34", "interpolate",
     {1: (0, 1, 1), 2: (0, 1, 1, 1), 3: (0, 1, 1, 1, 1, 1), 4: (0, 1, 1)},
     "0:0;1:1,2|0:0;1:1,2,3|0:0;1:1,2,3,4,5|0:0;1:1,2"),
    ("imagenet_resnet_34", "imagenet_resnet_26", "interleave",
     {1: (0, 1), 2: (0, 1, 2), 3: (0, 1, 2, 4), 4: (0, 1, 2)}, "0:0;1:1|0:0;1:1;2:2|0:0;1:1;2:2;4:3|0:0;1:1;2:2"),
    ("imagenet_resnet_26", "imagenet_resnet_18", "drop_last",
     {1: (0, 1), 2: (0, 1), 3: (0, 1), 4: (0, 1)}, "0:0;1:1"),
    # Bottleneck: block 0 of every stage changes the channels (x4 output), so it stays in place.
    ("imagenet_resnet_50", "imagenet_resnet_101", "append",
     {1: (0, 1, 2), 2: (0, 1, 2, 3), 3: (0, *(1, 2, 3, 4, 5) * 4, 1, 2), 4: (0, 1, 2)},
     "0:0;1:1;2:2|0:0;1:1;2:2;3:3|0:0;1:1,6,11,16,21;2:2,7,12,17,22;3:3,8,13,18;4:4,9,14,19;5:5,10,15,20|0:0;1:1;2:2"),
    ("imagenet_resnet_101", "imagenet_resnet_50", "drop_last",
     {1: (0, 1, 2), 2: (0, 1, 2, 3), 3: (0, 1, 2, 3, 4, 5), 4: (0, 1, 2)},
     "0:0;1:1;2:2|0:0;1:1;2:2;3:3|0:0;1:1;2:2;3:3;4:4;5:5|0:0;1:1;2:2"),
    ("cifar_vgg_13", "cifar_vgg_16", "append",
     {1: (0, 1), 2: (0, 1), 3: (0, 1, 1), 4: (0, 1, 1), 5: (0, 1, 0)},
     "0:0;1:1|0:0;1:1|0:0;1:1,2|0:0;1:1,2|0:0,2;1:1"),
    ("cifar_vgg_16", "cifar_vgg_19", "append",
     {1: (0, 1), 2: (0, 1), 3: (0, 1, 2, 1), 4: (0, 1, 2, 1), 5: (0, 1, 2, 0)},
     "0:0;1:1|0:0;1:1|0:0;1:1,3;2:2|0:0;1:1,3;2:2|0:0,3;1:1;2:2"),
    ("cifar_vgg_19", "cifar_vgg_16", "drop_last",
     {1: (0, 1), 2: (0, 1), 3: (0, 1, 2), 4: (0, 1, 2), 5: (0, 1, 2)}, "0:0;1:1|0:0;1:1|0:0;1:1;2:2|0:0;1:1;2:2|0:0;1:1;2:2"),
]


@pytest.mark.parametrize("source, target, strategy, mapping, text", FAMILY_PLANS)
def test_family_plans_and_official_strings(source, target, strategy, mapping, text):
    p = transfer.plan(source, target, strategy)
    assert p.mapping == mapping
    assert p.to_string() == text
    assert transfer.plan(source, target, text).mapping == mapping      # the string round-trips


@pytest.mark.parametrize("source, target", [("imagenet_resnet_18_8", "imagenet_resnet_26_8"),
                                            ("imagenet_resnet_50_8", "imagenet_resnet_101_8"),
                                            ("cifar_vgg_16_8", "cifar_vgg_19_8")])
def test_every_target_unit_equals_its_source_unit(source, target):
    model = models.get_model(source)
    variables = random_variables(model, (32, 32, 3))   # every leaf tells its source apart
    rng = np.random.default_rng(1)
    mask = jax.tree.map(lambda p: rng.random(p.shape) < 0.5, variables["params"])
    ticket = Ticket(model, source, mask, masks.apply(variables["params"], mask), variables["batch_stats"])
    moved = transfer.transfer_ticket(ticket, target)
    for s, sources in transfer.plan(source, target).mapping.items():
        for b, j in enumerate(sources):
            for tree, original in ((moved.params, ticket.params), (moved.batch_stats, ticket.batch_stats),
                                   (moved.mask, ticket.mask)):
                jax.tree.map(np.testing.assert_array_equal, tree[f"stage{s}_block{b}"], original[f"stage{s}_block{j}"])


@pytest.mark.parametrize("source, target, match", [
    ("cifar_vgg_11", "cifar_vgg_16", r"Stage 1 of the source has only block 0 or other fixed blocks .* VGG conv that "
                                     r"changes the channels"),
    ("imagenet_resnet_18", "imagenet_resnet_50", r"'imagenet_resnet' vs 'imagenet_resnet_bottleneck'\); E-LTH moves "
                                                 r"tickets within one family \(one block type\)"),
    ("cifar_vgg_16", "cifar_resnet_20", r"Cannot transfer between model families"),
])
def test_transfers_across_block_types_or_unstretchable_stages_are_refused(source, target, match):
    with pytest.raises(ValueError, match=match):
        transfer.plan(source, target)


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory):
    """CIFAR-10 binary batches of random 32x32 images (64 train, 16 test), as the official files lay them out."""
    root = tmp_path_factory.mktemp("cifar")
    folder = root / "cifar-10-batches-bin"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, n in [(f"data_batch_{i}.bin", 13) for i in range(1, 6)] + [("test_batch.bin", 16)]:
        records = np.concatenate([rng.integers(0, 10, (n, 1)), rng.integers(0, 256, (n, 3072))], axis=1)
        (folder / name).write_bytes(records.astype(np.uint8).tobytes())
    return str(root)


@pytest.mark.parametrize("model", ["cifar_vgg_11_8"])  # imagenet_resnet_18_8: test_stream.py (JPEGs)
def test_one_imp_level_of_a_new_family(tmp_path, cifar_dir, model):
    from elax import runs
    from conftest import tiny_config
    config = tiny_config(**{"model.name": model, "data.name": "cifar10", "data.dir": cifar_dir, "train.epochs": 1,
                            "train.batch_size": 32, "train.milestones": (), "lottery.levels": 1,
                            "lottery.rewind_steps": 1, "lottery.prune_fraction": 0.5})
    records = runs.run_imp(config, str(tmp_path / "run"), log=lambda _: None)
    assert [r["level"] for r in records] == [0, 1] and all(r["steps"] == 3 for r in records)
    family = models.family_of(model)
    dense = runs.load_ticket(str(tmp_path / "run"), 0)
    total = sum(int(np.size(leaf)) for leaf in masks.prunable_leaves(dense.params, family.prunable).values())
    assert records[1]["prunable_weights"] == total and records[1]["kept_weights"] == total - math.ceil(total / 2)
    ticket = runs.load_ticket(str(tmp_path / "run"), 1)
    assert ticket.sparsity == pytest.approx(records[1]["sparsity"])
    assert bool(np.all(np.asarray(ticket.mask["head"]["kernel"]))) == (model.startswith("cifar_vgg"))
    table = ticket.density_report().splitlines()   # the family's layers only: a VGG's classifier is not among them
    assert table[-1].split()[2:] == [str(records[1]["kept_weights"]), str(total), f"{1 - ticket.sparsity:.2%}"]
    assert ("head/kernel" in ticket.density_report()) != model.startswith("cifar_vgg")
    if not model.startswith("cifar_vgg"):
        return
    # A baseline on VGG matches the IMP level's count exactly, leaving the classifier unpruned as IMP does.
    # "random": no scores to compile (SNIP's gradients on a VGG cost more than the IMP level).
    config.mode, config.baseline.method, config.baseline.reference = "baseline", "random", str(tmp_path / "run")
    (random,) = runs.run_baseline(config, str(tmp_path / "random"), log=lambda _: None)
    assert (random["kept_weights"], random["prunable_weights"]) == (records[1]["kept_weights"], total)
    assert bool(np.all(np.asarray(runs.load_ticket(str(tmp_path / "random"), 1).mask["head"]["kernel"])))


def test_an_input_too_small_for_a_family_is_a_clear_error(tmp_path):
    from elax import runs
    from conftest import tiny_config
    with pytest.raises(ValueError, match=r"config.model.name: cifar_vgg_11_8 needs images of at least 32x32 .* "
                                         r"digits has 8x8\. Pad them \(config.data.pad_to=32\)"):
        runs.run_imp(tiny_config(**{"model.name": "cifar_vgg_11_8"}), str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()
    # Streamed JPEGs are cropped to data.image_size: that is the fix, found before the folder is even read.
    config = tiny_config(**{"model.name": "imagenet_resnet_18_8", "data.name": "imagefolder",
                            "data.dir": str(tmp_path / "nowhere"), "data.image_size": 8, "data.resize_size": 8})
    with pytest.raises(ValueError) as info:
        runs.run_imp(config, str(tmp_path / "run"))
    assert str(info.value) == (
        "config.model.name: imagenet_resnet_18_8 needs images of at least 32x32 (its pools and strides would leave "
        "nothing of smaller ones); config.data.image_size=8 crops 8x8. Use config.data.image_size=32 (and a "
        "config.data.resize_size of at least that).")


def test_padded_images_reach_the_model_and_name_the_recipe():
    from elax import train, workdir
    from elax.runs.checks import check_for_dataset
    from elax.runs import context
    from conftest import tiny_config
    config = tiny_config(**{"model.name": "cifar_vgg_11_8", "data.pad_to": 32})
    source = context._load_on_devices(config.data, train.make_mesh())
    assert source.image_shape == (32, 32, 1) and source.num_train == 1437
    check_for_dataset(config, source.num_train, source.image_shape, 1)  # no error: 32x32 is enough for a VGG
    padded, plain = config.to_dict(), tiny_config().to_dict()
    assert workdir.recipe(padded)["data.pad_to"] == 32 and "data.pad_to" not in workdir.recipe(plain)
    assert workdir.recipe_differences(padded, plain) == ["data.pad_to: 32 vs 0"]   # 0, as config.json says
