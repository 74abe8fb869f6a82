"""Tests for elax.transfer: exact E-LTH block mappings, the official mapping syntax, tree copies and errors."""

import re

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from elax import masks, models, pruning, transfer
from elax.models import get_model
from elax.ticket import Ticket
import toy_family  # noqa: F401  (registers the "toy" family)
from conftest import random_variables

INPUT_SHAPE = (8, 8, 3)
SOURCES = ("cifar_resnet_20_4", "cifar_resnet_56_4")

# (source depth, target depth, strategy, blocks of every stage); all three CIFAR stages share the mapping.
TABLES = [
    (20, 32, "append", (0, 1, 2, 1, 2)),
    (32, 56, "append", (0, 1, 2, 3, 4, 1, 2, 3, 4)),
    (20, 56, "append", (0, 1, 2, 1, 2, 1, 2, 1, 2)),
    (14, 32, "append", (0, 1, 1, 1, 1)),
    (20, 32, "interpolate", (0, 1, 1, 2, 2)),
    (32, 56, "interpolate", (0, 1, 1, 2, 2, 3, 3, 4, 4)),
    (20, 56, "interpolate", (0, 1, 1, 1, 1, 2, 2, 2, 2)),
    (20, 44, "interpolate", (0, 1, 1, 1, 2, 2, 2)),
    (32, 44, "interpolate", (0, 1, 1, 2, 2, 3, 4)),
    (14, 32, "interpolate", (0, 1, 1, 1, 1)),
    (56, 32, "drop_last", (0, 1, 2, 3, 4)),
    (32, 20, "drop_last", (0, 1, 2)),
    (56, 32, "interleave", (0, 1, 3, 5, 7)),
    (32, 20, "interleave", (0, 1, 3)),
    (56, 44, "interleave", (0, 1, 2, 3, 5, 6, 7)),
    (56, 20, "interleave", (0, 1, 5)),
    (56, 14, "interleave", (0, 1)),
    (20, 20, "append", (0, 1, 2)),
    (20, 20, "interleave", (0, 1, 2)),
]

STRINGS = [
    (20, 32, "append", "0:0;1:1,3;2:2,4"),
    (32, 56, "append", "0:0;1:1,5;2:2,6;3:3,7;4:4,8"),
    (20, 56, "append", "0:0;1:1,3,5,7;2:2,4,6,8"),
    (14, 32, "append", "0:0;1:1,2,3,4"),
    (20, 32, "interpolate", "0:0;1:1,2;2:3,4"),
    (32, 56, "interpolate", "0:0;1:1,2;2:3,4;3:5,6;4:7,8"),
    (56, 32, "drop_last", "0:0;1:1;2:2;3:3;4:4"),
    (56, 32, "interleave", "0:0;1:1;3:2;5:3;7:4"),
    (32, 20, "interleave", "0:0;1:1;3:2"),
    (20, 20, "append", "0:0;1:1;2:2"),
]


def resnet(depth, width=None):
    return f"cifar_resnet_{depth}" + (f"_{width}" if width else "")


def toy(stage_sizes=(2, 2, 2, 2), widths=None):
    """A model of the tests' toy family (tests/toy_family.py), for stage layouts no registry family has."""
    name = "toy_" + "-".join(map(str, stage_sizes)) + ("_w" + "-".join(map(str, widths)) if widths else "")
    return get_model(name)


def block_names(stage_sizes):
    return {f"stage{s}_block{b}" for s, n in enumerate(stage_sizes, start=1) for b in range(n)}


def source_layer(p, name):
    """'stage1_block3/conv1/kernel' -> the source layer it was copied from under plan `p`."""
    match = re.fullmatch(r"stage(\d+)_block(\d+)/(.*)", name)
    if not match:
        return name  # stem and head
    s, b = int(match[1]), int(match[2])
    return f"stage{s}_block{p.mapping[s][b]}/{match[3]}"


def trees_equal(a, b):
    return jax.tree.structure(a) == jax.tree.structure(b) and all(
        np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.fixture(scope="module")
def sources():
    """{name: ticket} of small ResNets at two IMP levels, with distinct BN statistics in every block."""
    tickets = {}
    for index, name in enumerate(SOURCES):
        model = get_model(name)
        variables = random_variables(model, INPUT_SHAPE, seed=index)   # no init to compile per model
        params = variables["params"]
        mask = masks.build(params)
        for _ in range(2):
            mask = pruning.prune_magnitude(masks.apply(params, mask), mask, 0.2)
        # Fresh BN statistics are 0/1 everywhere: randomise them so that a wrong block copy shows.
        rng = np.random.default_rng(index)
        batch_stats = jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(np.float32),
                                   variables["batch_stats"])
        tickets[name] = Ticket(model, name, mask, masks.apply(params, mask), batch_stats, level=2, rewind_step=7)
    return tickets


# ----------------------------------------------------------------------------------------------------------- plan


@pytest.mark.parametrize("source, target, strategy, blocks", TABLES)
def test_mapping_tables(source, target, strategy, blocks):
    p = transfer.plan(resnet(source), resnet(target), strategy)
    assert p.mapping == {1: blocks, 2: blocks, 3: blocks}
    assert (p.source, p.target, p.strategy) == (resnet(source), resnet(target), strategy)
    n_source, n_target = (source - 2) // 6, (target - 2) // 6
    assert (p.source_stage_sizes, p.target_stage_sizes) == ((n_source,) * 3, (n_target,) * 3)


@pytest.mark.parametrize("source, target, strategy, text", STRINGS)
def test_to_string(source, target, strategy, text):
    assert transfer.plan(resnet(source), resnet(target), strategy).to_string() == text


@pytest.mark.parametrize("source, target, strategy, blocks", TABLES)
def test_mapping_string_round_trip(source, target, strategy, blocks):
    p = transfer.plan(resnet(source), resnet(target), strategy)
    back = transfer.plan(resnet(source), resnet(target), strategy=p.to_string())
    assert back.mapping == p.mapping
    assert back.strategy == p.to_string()


def test_plan_accepts_modules_and_prints_readably():
    p = transfer.plan(get_model("cifar_resnet_20"), get_model("cifar_resnet_32"))
    assert str(p) == ("cifar_resnet_20 -> cifar_resnet_32 (append)\n"
                      "  stage 1: B0 B1 B2 B1 B2\n"
                      "  stage 2: B0 B1 B2 B1 B2\n"
                      "  stage 3: B0 B1 B2 B1 B2")


def test_per_stage_mapping_string_imagenet_resnet_18_to_26():
    text = "0:0;1:1|0:0;1:1,2|0:0;1:1,2,3|0:0;1:1,2"
    p = transfer.plan(toy((2, 2, 2, 2)), toy((2, 3, 4, 3)), text)
    assert p.mapping == {1: (0, 1), 2: (0, 1, 1), 3: (0, 1, 1, 1), 4: (0, 1, 1)}
    assert p.to_string() == text
    assert transfer.plan(toy(), toy((2, 3, 4, 3))).mapping == p.mapping


def test_per_stage_mapping_string_cifar():
    text = "0:0;1:1,3;2:2,4|0:0;1:1,2;2:3,4|0:0;1:1,2,3,4"
    p = transfer.plan("cifar_resnet_20", "cifar_resnet_32", text)
    assert p.mapping == {1: (0, 1, 2, 1, 2), 2: (0, 1, 1, 2, 2), 3: (0, 1, 1, 1, 1)}
    assert p.to_string() == text
    assert str(p).splitlines()[0] == f"cifar_resnet_20 -> cifar_resnet_32 ({text})"


# ---------------------------------------------------------------------------------------------------------- apply


@pytest.mark.parametrize("source, target, strategy", [
    ("cifar_resnet_20_4", "cifar_resnet_32_4", "append"),
    ("cifar_resnet_20_4", "cifar_resnet_56_4", "interpolate"),
    ("cifar_resnet_56_4", "cifar_resnet_32_4", "interleave"),
    ("cifar_resnet_56_4", "cifar_resnet_20_4", "drop_last"),
])
def test_apply_copies_blocks_exactly(sources, source, target, strategy):
    ticket = sources[source]
    p = transfer.plan(source, target, strategy)
    expected = jax.eval_shape(lambda: get_model(target).init(jax.random.key(0), jnp.zeros((1, *INPUT_SHAPE))))
    for collection, tree in (("params", ticket.params), ("batch_stats", ticket.batch_stats), ("mask", ticket.mask)):
        out = transfer.apply(p, tree)
        reference = expected["batch_stats" if collection == "batch_stats" else "params"]
        assert jax.tree.map(np.shape, out) == jax.tree.map(lambda s: s.shape, reference)
        assert {k for k in out if k.startswith("stage")} == block_names(p.target_stage_sizes)
        for key in [k for k in tree if not k.startswith("stage")]:
            assert trees_equal(out[key], tree[key])  # stem and head pass through
        for s, blocks in p.mapping.items():
            for b, j in enumerate(blocks):
                assert trees_equal(out[f"stage{s}_block{b}"], tree[f"stage{s}_block{j}"])

    mask, params = transfer.apply(p, ticket.mask), transfer.apply(p, ticket.params)
    source_density = {layer.name: (layer.kept, layer.total) for layer in masks.layer_report(ticket.mask)}
    for layer in masks.layer_report(mask):
        assert (layer.kept, layer.total) == source_density[source_layer(p, layer.name)]
    assert all(not np.any(np.where(m, 0, w)) for w, m in zip(jax.tree.leaves(params), jax.tree.leaves(mask)))


def test_identity_plan_returns_equal_trees(sources):
    ticket = sources["cifar_resnet_20_4"]
    p = transfer.plan("cifar_resnet_20_4", "cifar_resnet_20_4", "interpolate")
    for tree in (ticket.params, ticket.batch_stats, ticket.mask):
        out = transfer.apply(p, tree)
        assert trees_equal(out, tree) and out is not tree


def test_apply_is_pure_and_accepts_frozen_dicts(sources):
    ticket = sources["cifar_resnet_20_4"]
    p = transfer.plan("cifar_resnet_20_4", "cifar_resnet_32_4")
    before = jax.tree.map(lambda x: x, ticket.mask)
    out = transfer.apply(p, ticket.mask)
    out["stage1_block1"]["conv1"]["kernel"] = None  # editing the result must not reach the source
    assert trees_equal(ticket.mask, before)
    assert trees_equal(transfer.apply(p, flax.core.freeze(ticket.mask)), transfer.apply(p, ticket.mask))


# ------------------------------------------------------------------------------------------------ transfer_ticket


def test_transfer_ticket_copies_mask_weights_and_stats(sources):
    ticket = sources["cifar_resnet_20_4"]
    p = transfer.plan("cifar_resnet_20_4", "cifar_resnet_32_4")
    moved = transfer.transfer_ticket(ticket, "cifar_resnet_32_4")
    assert (moved.model_name, moved.level, moved.rewind_step) == ("cifar_resnet_32_4", 2, 7)
    assert moved.model.stage_sizes == (5, 5, 5) and moved.model.width == 4
    assert moved.meta == {"source_model": "cifar_resnet_20_4", "source_level": 2, "strategy": "append",
                          "replica_masks": "copy", "weights": "source"}
    assert trees_equal(moved.mask, transfer.apply(p, ticket.mask))
    assert trees_equal(moved.params, transfer.apply(p, ticket.params))
    assert trees_equal(moved.batch_stats, transfer.apply(p, ticket.batch_stats))


def test_transfer_ticket_accepts_official_strings(sources):
    moved = transfer.transfer_ticket(sources["cifar_resnet_56_4"], get_model("cifar_resnet_32_4"),
                                     strategy="0:0;1:1;3:2;5:3;7:4")
    assert moved.meta["strategy"] == "0:0;1:1;3:2;5:3;7:4"
    interleaved = transfer.transfer_ticket(sources["cifar_resnet_56_4"], "cifar_resnet_32_4", "interleave")
    assert trees_equal(moved.mask, interleaved.mask)


def test_permuted_replica_masks(sources):
    ticket = sources["cifar_resnet_20_4"]
    copied = transfer.transfer_ticket(ticket, "cifar_resnet_32_4", "interpolate")
    permuted = transfer.transfer_ticket(ticket, "cifar_resnet_32_4", "interpolate", replica_masks="permute", seed=3)
    assert permuted.meta["replica_masks"] == "permute"
    replicas = {f"stage{s}_block{b}" for s in (1, 2, 3) for b in (2, 4)}  # B0 B1 B1' B2 B2'
    for name in block_names((5, 5, 5)):
        if name not in replicas:
            assert trees_equal(permuted.mask[name], copied.mask[name])
            continue
        for (path, new), old in zip(jax.tree_util.tree_flatten_with_path(permuted.mask[name])[0],
                                    jax.tree.leaves(copied.mask[name])):
            assert np.sum(new) == np.sum(old)
            if masks.path_str(path).endswith("kernel"):
                assert not np.array_equal(new, old)
            else:
                assert np.all(new)  # never-pruned leaves stay all-True
    assert trees_equal(permuted.params, masks.apply(copied.params, permuted.mask))
    again = transfer.transfer_ticket(ticket, "cifar_resnet_32_4", "interpolate", replica_masks="permute", seed=3)
    assert trees_equal(again.mask, permuted.mask)


def test_reinit_weights_keep_the_mask(sources, monkeypatch):
    ticket = sources["cifar_resnet_20_4"]
    copied = transfer.transfer_ticket(ticket, "cifar_resnet_32_4")
    calls = []

    def drawn_init_variables(model, key, input_shape):
        # init_variables' contract (the model's variables for that input) without compiling or running an init.
        variables = random_variables(model, input_shape, seed=5)
        calls.append((model, key, input_shape, variables))
        return variables

    monkeypatch.setattr(models, "init_variables", drawn_init_variables)
    fresh = transfer.transfer_ticket(ticket, "cifar_resnet_32_4", weights="reinit", seed=5)
    [(model, key, input_shape, variables)] = calls
    assert model is fresh.model and model.stage_sizes == (5, 5, 5) and input_shape == (32, 32, 3)
    assert np.array_equal(jax.random.key_data(key), jax.random.key_data(jax.random.key(5)))
    assert fresh.meta["weights"] == "reinit"
    assert trees_equal(fresh.mask, copied.mask)
    assert trees_equal(fresh.params, masks.apply(variables["params"], fresh.mask))
    assert trees_equal(fresh.batch_stats, variables["batch_stats"])
    flat_params = jax.tree_util.tree_flatten_with_path(fresh.params)[0]
    for (path, new), old, keep in zip(flat_params, jax.tree.leaves(copied.params), jax.tree.leaves(fresh.mask)):
        assert not np.any(np.where(keep, 0, new))
        if masks.path_str(path).endswith("kernel"):
            assert not np.array_equal(new, old)


# --------------------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("text, match", [
    ("0:0;1:1,2", r"Stage 1, target block 3 has no source block"),
    ("0:0;1:1,3;5:2,4", r"Stage 1, target block 2: source block 5 does not exist; the source stage has 3 "
                        r"blocks \(0\.\.2\)"),
    ("1:0,1,3;2:2,4", r"target block 0 \(a fixed block, e.g. the downsampling block\) must copy source block 0, "
                      r"not block 1"),
    ("0:0,3;1:1;2:2,4", r"target block 3: source block 0 \(a fixed block, e.g. the downsampling block\) can only "
                        r"feed target block 0"),
    ("0:0;1:1,3;2:2,3,4", r"target block 3 gets two source blocks \(1 and 2\)"),
    ("0:0;1:1,3;1:2,4", r"Stage 1: source block 1 has two entries \('1:1,3' and '1:2,4'\); give each source block "
                        r"one entry listing all its target blocks\."),
    ("0:0;1:1,3;2:2,4,5", r"target block 5 does not exist; the target stage has 5 blocks"),
    ("0-0;1:1,3;2:2,4", r"Cannot parse '0-0'"),
    ("0:0;1:1,3;2:2,4|0:0;1:1,3;2:2,4", r"2 '\|'-separated stage mappings but the models have 3 stages"),
    ("0:0;1:1,3;2:2,4|0:0;1:1,3;2:2,4|0:0;1:1,2", r"Stage 3, target block 3 has no source block"),
])
def test_invalid_mapping_strings(text, match):
    with pytest.raises(ValueError, match=match):
        transfer.plan("cifar_resnet_20", "cifar_resnet_32", text)


def test_invalid_plan_built_directly():
    with pytest.raises(ValueError, match=r"Stage 2, target block 1: source block 0 \(a fixed block"):
        transfer.Plan("a", "b", (3, 3), (3, 3), "custom", {1: (0, 1, 2), 2: (0, 0, 2)})
    with pytest.raises(ValueError, match=r"one entry per stage \[1, 2\], got stages \[1\]"):
        transfer.Plan("a", "b", (3, 3), (3, 3), "custom", {1: (0, 1, 2)})


@pytest.mark.parametrize("source, target, strategy, match", [
    ("cifar_resnet_20", "cifar_resnet_32", "stretchy",
     r"Unknown strategy 'stretchy'\. Valid: 'append', 'interpolate' \(stretch\), 'drop_last', 'interleave'"),
    ("cifar_resnet_20", "cifar_resnet_32", "drop_last",
     r"'drop_last' cannot stretch stage 1 from 3 to 5 blocks; valid stretch strategies: 'append', 'interpolate'"),
    ("cifar_resnet_56", "cifar_resnet_32", "append",
     r"'append' cannot squeeze stage 1 from 9 to 5 blocks; valid squeeze strategies: 'drop_last', 'interleave'"),
    ("cifar_resnet_20", "cifar_resnet_20", "nonsense", r"Unknown strategy 'nonsense'"),
    ("cifar_resnet_8", "cifar_resnet_14", "append", r"Stage 1 of the source has only block 0"),
    ("cifar_resnet_20", "cifar_resnet_32_32", "append", r"different widths .*stage 1 outputs \(32, 32, 16\) vs "
                                                        r"\(32, 32, 32\)"),
    ("toy_3-3-3", "cifar_resnet_32", "append", r"model families .*'toy' vs 'cifar_resnet'"),
    ("toy_3-3-3", "toy_3-3-3-3", "append", r"different numbers of stages .*3 vs 4"),
    ("toy_2-2_w4-4", "toy_2-2_w4-8", "append", r"different widths"),
    (object(), "cifar_resnet_32", "append", r"object is not a model of a registered family"),
    ("resnet_20", "cifar_resnet_32", "append", r"Unknown model 'resnet_20'"),
])
def test_plan_refuses(source, target, strategy, match):
    with pytest.raises(ValueError, match=match):
        transfer.plan(source, target, strategy)


def test_apply_refuses_trees_of_other_models(sources):
    mask_20 = sources["cifar_resnet_20_4"].mask
    mask_32 = transfer.apply(transfer.plan("cifar_resnet_20_4", "cifar_resnet_32_4"), mask_20)
    with pytest.raises(ValueError, match=r"has 'stage1_block3', which the source lacks; the tree has blocks per "
                                         r"stage \(5, 5, 5\)\. Is it a tree \(e\.g\. a mask\) from another model"):
        transfer.apply(transfer.plan("cifar_resnet_20_4", "cifar_resnet_56_4"), mask_32)
    with pytest.raises(ValueError, match=r"cifar_resnet_32_4 \(blocks per stage \(5, 5, 5\)\): it has no "
                                         r"'stage1_block3'"):
        transfer.apply(transfer.plan("cifar_resnet_32_4", "cifar_resnet_56_4"), mask_20)
    with pytest.raises(ValueError, match=r"Pass variables\['params'\]"):
        transfer.apply(transfer.plan("cifar_resnet_20_4", "cifar_resnet_32_4"), {"params": mask_20})


def test_apply_refuses_blocks_of_the_wrong_shape(sources):
    params = dict(sources["cifar_resnet_20_4"].params)
    params["stage2_block2"] = {**params["stage2_block2"], "conv1": {"kernel": jnp.zeros((3, 3, 4, 8))}}
    expected = (r"Source stage2_block2 does not fit target stage2_block2: leaf 'conv1/kernel' has shape "
                r"\(3, 3, 4, 8\), the target expects \(3, 3, 8, 8\)")
    with pytest.raises(ValueError, match=expected):
        transfer.apply(transfer.plan("cifar_resnet_20_4", "cifar_resnet_32_4"), params)


def test_transfer_ticket_refuses_bad_options(sources):
    ticket = sources["cifar_resnet_20_4"]
    with pytest.raises(ValueError, match=r"replica_masks: unknown option 'shuffle'. Valid: copy, permute."):
        transfer.transfer_ticket(ticket, "cifar_resnet_32_4", replica_masks="shuffle")
    with pytest.raises(ValueError, match=r"weights: unknown option 'random'. Valid: source, reinit."):
        transfer.transfer_ticket(ticket, "cifar_resnet_32_4", weights="random")
    with pytest.raises(ValueError, match=r"replica_masks='permute' shuffles the masks of replicated blocks, and "
                                         r"'drop_last' from cifar_resnet_20_4 to cifar_resnet_14_4 replicates none"):
        transfer.transfer_ticket(ticket, "cifar_resnet_14_4", "drop_last", replica_masks="permute")
    with pytest.raises(ValueError, match=r"different widths"):
        transfer.transfer_ticket(ticket, "cifar_resnet_32")
    with pytest.raises(ValueError, match=r"params do not fit cifar_resnet_32_4: leaf 'head/bias' has shape "
                                         r"\(10,\), the target expects \(100,\)"):
        transfer.transfer_ticket(ticket, get_model("cifar_resnet_32_4", num_classes=100))


def test_the_notebook_api_names_what_it_takes(sources):
    ticket = sources["cifar_resnet_20_4"]
    with pytest.raises(TypeError) as info:
        transfer.transfer_ticket(dict(ticket.params), "cifar_resnet_32_4")
    assert str(info.value) == ("transfer_ticket moves a Ticket (e.g. elax.runs.load_ticket(run_dir, level)), got "
                               "dict; for bare trees use elax.transfer.apply(elax.transfer.plan(source, target), "
                               "tree).")
    with pytest.raises(TypeError) as info:
        transfer.apply("0:0;1:1,2", ticket.mask)
    assert str(info.value) == "apply takes a Plan (elax.transfer.plan(source, target, strategy)), got str '0:0;1:1,2'."
    with pytest.raises(ValueError) as info:
        masks.format_report({})
    assert str(info.value) == ("format_report takes a mask tree with prunable layers (e.g. ticket.mask), got "
                               "dict {}.")


def test_command_line_prints_the_plan_its_string_and_the_training_command(capsys):
    assert transfer.main(["imagenet_resnet_18", "imagenet_resnet_26"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:6] == ["imagenet_resnet_18 -> imagenet_resnet_26 (append)", "  stage 1: B0 B1", "  stage 2: B0 B1 B1",
                       "  stage 3: B0 B1 B1 B1", "  stage 4: B0 B1 B1",
                       "mapping string: 0:0;1:1|0:0;1:1,2|0:0;1:1,2,3|0:0;1:1,2"]
    assert "--config.model.name=imagenet_resnet_26 --config.transfer.strategy='append'" in out[7]


@pytest.mark.parametrize("args, message", [
    (["cifar_vgg_11", "cifar_vgg_16"], "cannot be stretched to 2 blocks"),
    (["cifar_resnet_20", "imagenet_resnet_18"], "Cannot transfer between model families"),
    (["cifar_resnet_56", "cifar_resnet_20", "--strategy", "append"],
     "Strategy 'append' cannot squeeze stage 1 from 9 to 3 blocks"),
])
def test_command_line_refuses_a_bad_plan_in_one_line(capsys, args, message):
    assert transfer.main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("elax: error: ") and message in captured.err
    assert len(captured.err.splitlines()) == 1
