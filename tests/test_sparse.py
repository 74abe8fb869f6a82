"""Sparse training beyond IMP: layer distributions (uniform, ERK), N:M tickets over IMP levels and transfer,
the SET and RigL baselines through the mask-update hook, and masks in jaxpruner's shape."""

import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from elax import (checkpoint, distributions, jaxpruner_masks, mask_updates, masks, nm, optim, pruning,
                  report as report_lib, runs, tickets, train, transfer, workdir as wd)
from elax.config import ConfigError, default_config
from elax.runs import baselines as runs_baselines, imp as runs_imp
import plain_family  # noqa: F401  (registers the "plain" family)
from conftest import plain_training, tiny_config

# -- distributions ------------------------------------------------------------------------------------------------


def test_erk_densities_equal_a_hand_computation_with_a_layer_capped_at_dense():
    shapes = {"a": (3, 3, 1, 4), "b": (3, 3, 4, 8), "c": (8, 10)}
    sizes = {"a": 36, "b": 288, "c": 80}
    raw = {"a": 11 / 36, "b": 18 / 288, "c": 18 / 80}   # sum of the dimensions over their product
    # At sparsity 0.5, 202 of 404 weights stay. The scale 202 / (11 + 18 + 18) = 4.30 makes `a` denser than 1
    # (1.31): `a` is dense. Then (202 - 36) / (18 + 18) = 4.61 makes `c` denser than 1 (1.04): `c` is dense too,
    # and `b` keeps the rest, (202 - 36 - 80) / 288.
    assert 202 / 47 * raw["a"] > 1 and (202 - 36) / 36 * raw["c"] > 1
    got = distributions.erk_densities(shapes, 0.5)
    assert got == {"a": 1.0, "b": pytest.approx(86 / 288), "c": 1.0}
    assert got["b"] == pytest.approx((202 - 36 - 80) / (raw["b"] * sizes["b"]) * raw["b"])
    assert distributions.kept_counts(shapes, 0.5, "erk") == {"a": 36, "b": 86, "c": 80}
    assert distributions.kept_counts(shapes, 0.5, "uniform") == {"a": 18, "b": 144, "c": 40}


@pytest.mark.parametrize("distribution", ["uniform", "erk"])
@pytest.mark.parametrize("sparsity", [0.2, 0.8765, 0.99])
def test_uniform_and_erk_masks_hit_the_sparsity_exactly(resnet8_variables, distribution, sparsity):
    params = resnet8_variables["params"]
    mask = pruning.prune_to_sparsity(pruning.magnitude_scores(params), masks.build(params), sparsity,
                                     distribution=distribution)
    kept, total = masks.count(mask)
    assert kept == round((1 - sparsity) * total)
    shapes = {n: np.shape(m) for n, m in masks.prunable_leaves(mask).items()}
    assert {l.name: l.kept for l in masks.layer_report(mask)} == distributions.kept_counts(shapes, sparsity,
                                                                                           distribution)


# -- N:M ------------------------------------------------------------------------------------------------------------

def test_nm_structures_parse_and_schedules_step_down():
    assert nm.parse("unstructured") is None and nm.parse("2:4") == (2, 4)
    for bad in ("4:2", "0:4", "2-4", "4:4"):
        with pytest.raises(ValueError, match="structure must be 'unstructured' or 'N:M'"):
            nm.parse(bad)
    assert nm.schedule(1, 8, 0.2, 7) == [8, 6, 5, 4, 3, 2, 1, 1]
    assert nm.schedule(1, 4, 0.5, 3) == [4, 2, 1, 1] and nm.schedule(2, 8, 0.5, 2) == [8, 4, 2]
    conv = np.arange(3 * 3 * 8 * 2).reshape(3, 3, 8, 2)
    kept = nm.keep_top_per_group(conv, np.ones(conv.shape, bool), 1, 4)   # groups along the input channels
    assert kept[:, :, [3, 7], :].all() and kept.sum() == 3 * 3 * 2 * 2


@pytest.fixture(scope="module")
def nm_run(tmp_path_factory):
    """IMP at 1:4 on a plain MLP whose last hidden layer (30 inputs) 4 does not divide: (workdir, records, log)."""
    workdir, lines = str(tmp_path_factory.mktemp("nm")), []
    config = tiny_config(**{"model.name": "plain_2-1-1_w32-30-32", "lottery.levels": 2,
                            "lottery.prune_fraction": 0.5, "lottery.structure": "1:4", "train.epochs": 1})
    return workdir, runs.run_imp(config, workdir, log=lines.append), lines


def test_nm_tickets_follow_the_pattern_at_every_level_and_after_transfer(nm_run, tmp_path):
    workdir, records, lines = nm_run
    prunable = nm.grouped_prunable(plain_family.FAMILY.prunable, 4)
    assert ("lottery.structure=1:4: stage3_block0/dense/kernel left dense (their input axis is not a multiple of 4)"
            in lines)
    for level, n in ((1, 2), (2, 1)):   # 4 -> 2 -> 1 per group of 4
        ticket = runs.load_ticket(workdir, level)
        assert nm.follows(ticket.mask, n, 4, prunable) and not nm.follows(ticket.mask, n - 1, 4, prunable)
        assert records[level]["structure"] == "1:4" and records[level]["sparsity"] == 1 - n / 4
        assert np.asarray(ticket.mask["stage3_block0"]["dense"]["kernel"]).all()   # left dense
        moved = transfer.transfer_ticket(ticket, "plain_3-1-1_w32-30-32")         # stage 1: B0 B1 B1
        assert nm.follows(moved.mask, n, 4, prunable)
    # Its ticket file counts the run's prunable weights (the dense layer left out), as the record does.
    meta = tickets.load(tickets.export(workdir, 2, str(tmp_path / "level2.safetensors"))).meta
    assert (meta["sparsity"], meta["kept_weights"], meta["prunable_weights"], meta["structure"]) == (
        0.75, records[2]["kept_weights"], records[2]["prunable_weights"], "1:4")


def test_an_ett_run_of_an_nm_source_keeps_its_structure(nm_run, tmp_path):
    workdir, _, _ = nm_run
    config = tiny_config(**{"mode": "transfer", "model.name": "plain_3-1-1_w32-30-32", "transfer.source": workdir,
                            "transfer.levels": (2,), "train.epochs": 1})
    lines = []
    (record,) = runs.run_transfer(config, str(tmp_path / "ett"), log=lines.append)
    assert "Structure of the source run: lottery.structure='1:4'" in lines
    assert record["structure"] == "1:4" and record["sparsity"] == 0.75


def test_a_bad_structure_is_a_config_error():
    with pytest.raises(ConfigError, match=r"config.lottery.structure: structure must be 'unstructured' or 'N:M' "
                                          r"with 1 <= N < M \(e.g. '2:4'\), got '2:2'."):
        runs.check(tiny_config(**{"lottery.structure": "2:2"}))
    with pytest.raises(ConfigError, match=r"config.lottery.scope: does not apply to N:M tickets \(2:4\)"):
        runs.check(tiny_config(**{"lottery.structure": "2:4", "lottery.scope": "layer"}))
    with pytest.raises(ConfigError, match=r"config.lottery.layer_fractions: does not apply to N:M tickets"):
        runs.check(tiny_config(**{"lottery.structure": "2:4", "lottery.layer_fractions": (("head", 0.1),)}))
    ctx = types.SimpleNamespace(config=tiny_config(**{"lottery.structure": "2:4", "lottery.levels": 40}))
    assert runs_imp.check_levels_keep_weights(ctx) is None   # N of every M stay at every level: never empty


# -- SET and RigL -------------------------------------------------------------------------------------------------

def _ctx(**settings):
    return mask_updates.UpdateContext(masks.default_prunable, every=5, total_steps=100,
                                      settings=tuple(settings.items()))


def test_one_rigl_update_equals_a_hand_computation():
    w = jnp.asarray([[0.5, -0.1, 0.0, 0.9], [0.05, 0.0, -0.7, 0.0]])
    m = jnp.asarray([[True, True, False, True], [True, False, True, False]])
    g = jnp.asarray([[9.0, 9.0, 0.3, 9.0], [9.0, -2.0, 9.0, 0.8]])
    params, mask, grads = ({"d": {"kernel": w, "bias": jnp.zeros(4)}}, {"d": {"kernel": m, "bias": jnp.ones(4, bool)}},
                           {"d": {"kernel": g, "bias": jnp.ones(4)}})
    ctx = _ctx(drop_fraction=0.5, end_fraction=1.0)
    # Step 0: fraction 0.5 * 0.5 * (1 + cos 0) = 0.5 of the 5 kept: floor(2.5) = 2 replaced. Dropped: the two
    # smallest |w| kept (0.05 at [1, 0], 0.1 at [0, 1]); grown: the two largest |g| among the 3 pruned before
    # (2.0 at [1, 1], 0.8 at [1, 3]; 0.3 at [0, 2] stays pruned).
    new = mask_updates.rigl_update(params, mask, grads, jnp.int32(0), jax.random.key(0), ctx)
    expected = np.array([[True, False, False, True], [False, True, True, True]])
    np.testing.assert_array_equal(new["d"]["kernel"], expected)
    assert np.asarray(new["d"]["bias"]).all()
    assert float(mask_updates.drop_fraction(jnp.int32(50), ctx)) == pytest.approx(0.25)   # half-way: cos
    later = mask_updates.rigl_update(params, mask, grads, jnp.int32(100), jax.random.key(0), ctx)
    np.testing.assert_array_equal(later["d"]["kernel"], m)   # no update from end_fraction on


def test_a_rigl_update_zeroes_what_it_changes_in_params_and_optimizer_state(tiny_dataset):
    prunable = plain_family.FAMILY.prunable
    ctx = mask_updates.UpdateContext(prunable, 5, 20, (("drop_fraction", 0.3), ("end_fraction", 0.75)))
    trainer, state, data = plain_training(tiny_dataset, optim.adamw(0.01), fraction=0.5, prunable=prunable,
                                          mask_update=mask_updates.MaskUpdate(mask_updates.rigl_update, ctx))
    before, _ = trainer.train_steps(state, data, 5)
    before = jax.device_get(before)
    images, labels = trainer.batch(data, 5)

    @jax.jit   # the update by hand: the dense gradients of the batch of step 5, then RigL's rule
    def by_hand(params, mask):
        loss = lambda p: train.cross_entropy(trainer.model.apply({"params": p, "batch_stats": {}}, images, train=True),
                                             labels)
        return mask_updates.rigl_update(params, mask, jax.grad(loss)(params), jnp.int32(5), None, ctx)

    expected = by_hand(before.params, before.mask)
    after = jax.device_get(trainer.update_mask(before, data))
    for name in masks.prunable_leaves(before.mask, prunable):
        old, new = (np.asarray(masks.prunable_leaves(t, prunable)[name]) for t in (before.mask, after.mask))
        np.testing.assert_array_equal(new, np.asarray(masks.prunable_leaves(expected, prunable)[name]))
        changed = old != new
        replaced = min(math.floor(drop_fraction_at(5, 20) * old.sum()), (~old).sum())   # at most the pruned ones
        assert changed.sum() == 2 * replaced > 0 and new.sum() == old.sum()
        for tree in (after.params, after.opt_state[0].mu, after.opt_state[0].nu):
            assert np.all(np.asarray(masks.prunable_leaves(tree, prunable)[name])[changed] == 0)


def drop_fraction_at(step, total, alpha=0.3, end=0.75):
    return alpha * 0.5 * (1 + math.cos(math.pi * step / (end * total)))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A one-level IMP run of a plain MLP on digits: the reference of the dynamic baselines."""
    workdir = str(tmp_path_factory.mktemp("dst_reference"))
    runs.run_imp(tiny_config(**{"model.name": "plain_1-1_w32-32", "lottery.levels": 1}), workdir, log=lambda _: None)
    return workdir


def _dst(reference, workdir, method):
    config = tiny_config(**{"mode": "baseline", "model.name": "plain_1-1_w32-32", "baseline.method": method,
                            "baseline.reference": reference, "baseline.dst_every": 4})
    return runs.run_baseline(config, workdir, log=lambda _: None)


@pytest.fixture(scope="module")
def dynamic(reference, tmp_path_factory):
    """{method: (workdir, records)} of the SET and RigL baselines of `reference`, run whole."""
    out = {}
    for method in ("set", "rigl"):
        workdir = str(tmp_path_factory.mktemp(method))
        out[method] = workdir, _dst(reference, workdir, method)
    return out


def test_a_baselines_records_name_the_settings_it_read_when_not_the_defaults():
    """Kept apart in a report: reinit reads no distribution, set/rigl the dst_* keys, the others distribution."""
    b = default_config().baseline
    b.distribution, b.dst_distribution, b.dst_every, b.dst_drop_fraction = "erk", "uniform", 25, 0.5
    extras = lambda method: runs_baselines.record_extras(runs_baselines.BASELINES.get(method), b)
    assert extras("reinit") == {}
    assert extras("random") == extras("snip") == {"distribution": "erk"}
    assert extras("rigl") == {"distribution": "uniform", "dst_every": 25, "dst_drop_fraction": 0.5, "rewind_step": 0}
    record = {"method": "rigl", "model": "m", **extras("rigl")}
    assert report_lib.records.describe(record)[0] == "rigl-uniform-every25-drop0.5"
    assert report_lib.method_label("rigl-uniform-every25-drop0.5") == "RigL (uniform, every 25, drop 0.5)"


@pytest.mark.parametrize("method", ["set", "rigl"])
def test_dynamic_baselines_keep_each_layer_count_through_their_updates(reference, dynamic, method):
    workdir, (record,) = dynamic[method]
    imp = wd.find_record(reference, 1)
    assert (record["method"], record["rewind_step"], record["steps"]) == (method, 0, 24)
    assert record["kept_weights"] == imp["kept_weights"] and "distribution" not in record   # ERK: the default
    assert record["dst_every"] == 4 and "dst_drop_fraction" not in record and "dst_end_fraction" not in record
    assert report_lib.records.describe(record)[0] == f"{method}-every4"
    ticket = runs.load_ticket(workdir, 1)
    ctx = runs.setup(tiny_config(**{"model.name": "plain_1-1_w32-32"}))
    final = checkpoint.restore_state(wd.checkpoints_dir(workdir, 1), ctx.template_state)
    report = lambda tree: {l.name: l.kept for l in masks.layer_report(tree, ctx.prunable)}
    assert report(final.mask) == report(ticket.mask)   # updates at 4, 8, 12, 16 moved weights, not counts
    assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(final.mask), jax.tree.leaves(ticket.mask)))


def test_a_killed_dynamic_baseline_resumes_to_identical_results(reference, dynamic, tmp_path, monkeypatch):
    expected = dynamic["rigl"][1]
    real_save, saves = checkpoint.save_state, []

    def dying_save(directory, state):
        real_save(directory, state)
        saves.append(int(state.step))
        if len(saves) == 1:   # after the first epoch (step 12), between the updates at 8 and 16
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save_state", dying_save)
    with pytest.raises(KeyboardInterrupt):
        _dst(reference, str(tmp_path / "killed"), "rigl")
    monkeypatch.setattr(checkpoint, "save_state", real_save)
    assert saves == [12] and _dst(reference, str(tmp_path / "killed"), "rigl") == expected


# -- jaxpruner ------------------------------------------------------------------------------------------------------

def test_masks_in_jaxpruners_shape_and_back(resnet8_variables):
    params = resnet8_variables["params"]
    mask = pruning.prune_magnitude(params, masks.build(params), 0.5)
    theirs = jaxpruner_masks.to_jaxpruner(mask)
    # The structure of jaxpruner's SparseState.masks: None where nothing is pruned, uint8 0/1 where it is.
    assert theirs["stem_bn"] == {"bias": None, "scale": None} and theirs["head"]["bias"] is None
    assert theirs["stem_conv"]["kernel"].dtype == np.uint8 and set(np.unique(theirs["head"]["kernel"])) == {0, 1}
    back = jaxpruner_masks.from_jaxpruner(theirs, params)
    jax.tree.map(np.testing.assert_array_equal, back, mask)
    state = type("SparseState", (), {"masks": theirs})()   # a SparseState, read by its .masks
    jax.tree.map(np.testing.assert_array_equal, jaxpruner_masks.from_jaxpruner(state, params), mask)
    theirs["head"]["kernel"] = theirs["head"]["kernel"] * 2
    with pytest.raises(ValueError, match=r"jaxpruner mask 'head/kernel' is not a 0/1 array"):
        jaxpruner_masks.from_jaxpruner(theirs, params)
