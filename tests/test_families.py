"""The model-family protocol and the registries: a family, a baseline or a strategy added in one place is picked
up by the registry lookups, `config.validate` and elastic transfer (shown with the tests' toy family)."""

import jax
import numpy as np
import pytest

from elax import config as config_lib, masks, models, transfer
from elax.runs import BASELINES, RUNNERS
from elax.ticket import Ticket
import toy_family  # noqa: F401  (registers the "toy" family)


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
    variables = models.init_variables(source, jax.random.key(0), (4, 4, 3))
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
    assert models.family_of("cifar_resnet_20").rewind_steps == 1000


def test_a_registered_baseline_is_validated_and_used(monkeypatch):
    config = config_lib.default_config()
    config.mode, config.baseline.reference, config.baseline.method = "baseline", "/somewhere", "keep_all"
    with pytest.raises(ValueError, match=r"config.baseline.method: unknown baseline 'keep_all'"):
        config_lib.validate(config)
    monkeypatch.setitem(BASELINES, "keep_all", lambda ctx, m: (m.dense.params, m.dense.batch_stats, m.dense.mask))
    config_lib.validate(config)


def test_a_registered_strategy_is_validated_and_planned(monkeypatch):
    reverse = lambda k, m: tuple(reversed(range(k)))[:m]
    config = config_lib.default_config()
    config.mode, config.experiment.source_model = "experiment", "cifar_resnet_32"
    config.experiment.target_models, config.transfer.strategy = ("cifar_resnet_20",), "reverse"
    with pytest.raises(ValueError, match=r"config.transfer.strategy: 'reverse' cannot move cifar_resnet_32 to "
                                         r"cifar_resnet_20: Unknown strategy 'reverse'"):
        config_lib.validate(config)
    monkeypatch.setitem(transfer.STRATEGY_FUNCTIONS, "reverse", ("squeeze", reverse))
    config_lib.validate(config)
    assert transfer.plan("cifar_resnet_32", "cifar_resnet_20", "reverse").mapping[1] == (0, 4, 3)


def test_modes_come_from_the_runner_registry():
    assert config_lib.modes() == (*RUNNERS, "report") == ("imp", "transfer", "baseline", "experiment", "report")
