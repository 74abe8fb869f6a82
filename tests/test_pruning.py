"""Tests for elax.pruning: exact IMP counts, monotone masks, smallest-magnitude choice, ties, baselines."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from elax import masks, pruning

pytestmark = pytest.mark.smoke   # the first look: python -m pytest -m smoke

TOTAL = 5036  # prunable weights of cifar_resnet_8_4 (see test_masks.test_default_prunable_is_every_kernel)


def np_flat(tree):
    return {masks.path_str(p): np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def perturbed(params, seed):
    """Stand-in for the params after another level of training: same tree, new values, no ties."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda p: np.asarray(p) + 0.3 * np.std(p) * rng.standard_normal(p.shape).astype(np.float32)
                        if np.ndim(p) >= 2 else p, params)   # numpy: no one-op program to compile per shape


def kernels(tree):
    return {k: v for k, v in np_flat(tree).items() if k.endswith("kernel")}


def non_kernels(tree):
    return {k: v for k, v in np_flat(tree).items() if not k.endswith("kernel")}


def test_fifteen_levels_global_magnitude(resnet8_variables):
    params = resnet8_variables["params"]
    mask = masks.build(params)
    remaining = TOTAL
    for level in range(1, 16):
        level_params = perturbed(params, level)
        new = pruning.prune_magnitude(level_params, mask, 0.2)
        masks.validate(new, params)
        expected = remaining - math.ceil(0.2 * remaining)
        kept, total = masks.count(new)
        assert (kept, total) == (expected, TOTAL), level
        assert abs(masks.sparsity(new) - (1 - 0.8**level)) < 1e-3, level

        old_k, new_k, w = kernels(mask), kernels(new), kernels(level_params)
        for name in old_k:
            assert not np.any(new_k[name] & ~old_k[name]), (level, name)   # only shrinks
        for name, m in non_kernels(new).items():
            assert m.all(), (level, name)
        kept_w = np.concatenate([np.abs(w[k][new_k[k]]) for k in w])
        pruned_w = np.concatenate([np.abs(w[k][old_k[k] & ~new_k[k]]) for k in w])
        assert pruned_w.size == remaining - expected
        assert kept_w.min() >= pruned_w.max(), level   # the pruned ones are exactly the smallest alive
        mask, remaining = new, expected
    assert remaining == 176   # 5036 -> 4028 -> 3222 -> ... -> 176


def test_layer_scope_prunes_each_layer(resnet8_variables):
    params = resnet8_variables["params"]
    mask = pruning.prune_magnitude(perturbed(params, 1), masks.build(params), 0.36)  # uneven layer densities
    before = {l.name: l.kept for l in masks.layer_report(mask)}
    assert len(set(l.kept / l.total for l in masks.layer_report(mask))) > 1
    new = pruning.prune_magnitude(params, mask, 0.2, scope="layer")
    after = {l.name: l.kept for l in masks.layer_report(new)}
    w, old_k, new_k = kernels(params), kernels(mask), kernels(new)
    for name, alive in before.items():
        assert after[name] == alive - math.ceil(0.2 * alive), name
        pruned = np.abs(w[name][old_k[name] & ~new_k[name]])
        assert np.abs(w[name][new_k[name]]).min() >= pruned.max(), name
        assert not np.any(new_k[name] & ~old_k[name])
    for name, m in non_kernels(new).items():
        assert m.all(), name


def test_layer_fractions_prune_those_layers_on_their_own(resnet8_variables):
    params = resnet8_variables["params"]
    dense = masks.build(params)
    own = {"head": 0.1, "stage3_block0/conv2": 0.5}
    layer = pruning.prune_magnitude(params, dense, 0.2, scope="layer", layer_fractions=own)
    for l in masks.layer_report(layer):
        fraction = 0.1 if l.name.startswith("head") else 0.5 if l.name.startswith("stage3_block0/conv2") else 0.2
        assert l.kept == l.total - math.ceil(fraction * l.total), l.name
    pooled = pruning.prune_magnitude(params, dense, 0.2, layer_fractions=own)   # global scope for the rest
    report = {l.name: l for l in masks.layer_report(pooled)}
    assert report["head/kernel"].kept == 160 - math.ceil(0.1 * 160)
    conv2 = report["stage3_block0/conv2/kernel"]
    assert conv2.kept == conv2.total - math.ceil(0.5 * conv2.total)
    rest = [l for n, l in report.items() if not n.startswith(("head", "stage3_block0/conv2"))]
    rest_total = sum(l.total for l in rest)
    assert sum(l.kept for l in rest) == rest_total - math.ceil(0.2 * rest_total)
    assert len({round(l.kept / l.total, 3) for l in rest}) > 1   # pooled: ranked together, uneven per layer
    with pytest.raises(ValueError, match="prune_fraction must be in"):
        pruning.prune_magnitude(params, dense, 0.2, layer_fractions={"head": 1.0})


def test_exclude_head_keeps_head_dense(resnet8_variables):
    params = resnet8_variables["params"]
    prunable = masks.prunable_kernels(exclude=("head",))
    new = pruning.prune_magnitude(params, masks.build(params), 0.2, prunable=prunable)
    assert np.asarray(new["head"]["kernel"]).all()
    assert masks.count(new, prunable) == (TOTAL - 160 - math.ceil(0.2 * (TOTAL - 160)), TOTAL - 160)


def test_ties_broken_by_position():
    scores = {"a": {"kernel": jnp.ones((2, 2))}, "b": {"kernel": jnp.ones((2, 2))}}
    dense = masks.build(scores)
    new = pruning.prune_fraction(scores, dense, 0.25)   # ceil(0.25 * 8) = 2: the last two in tree order go
    np.testing.assert_array_equal(new["a"]["kernel"], np.ones((2, 2), bool))
    np.testing.assert_array_equal(new["b"]["kernel"], np.array([[True, True], [False, False]]))
    again = pruning.prune_fraction(scores, dense, 0.25)
    assert all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(new), jax.tree.leaves(again)))

    # A tie at the threshold: exactly the count asked for, the earlier of the tied weights survive.
    scores = {"w": {"kernel": jnp.asarray([[0.5, 0.1], [0.5, 0.9], [0.5, 0.7]])}}
    new = pruning.prune_fraction(scores, masks.build(scores), 0.5)   # remove 3 of 6
    np.testing.assert_array_equal(new["w"]["kernel"], [[True, False], [False, True], [False, True]])


def test_dead_weights_stay_dead_and_fraction_of_remaining():
    scores = {"w": {"kernel": jnp.arange(10.0).reshape(2, 5)}}
    mask = {"w": {"kernel": jnp.asarray([[True] * 5, [True, True, False, False, False]])}}   # 7 alive
    new = pruning.prune_fraction(scores, mask, 0.2)   # ceil(1.4) = 2: scores 0 and 1
    np.testing.assert_array_equal(new["w"]["kernel"], [[False, False, True, True, True], [True, True] + [False] * 3])


def test_prune_to_sparsity_exact(resnet8_variables):
    params = resnet8_variables["params"]
    dense = masks.build(params)
    scores = pruning.magnitude_scores(params)
    new = pruning.prune_to_sparsity(scores, dense, 0.9)
    assert masks.count(new) == (504, TOTAL)   # round(0.1 * 5036) = round(503.6)
    w, k = kernels(params), kernels(new)
    assert min(np.abs(w[n][k[n]]).min() for n in w) >= max(np.abs(w[n][~k[n]]).max() for n in w)
    layer = pruning.prune_to_sparsity(scores, dense, 0.75, scope="layer")
    for l in masks.layer_report(layer):
        assert l.kept == round(0.25 * l.total), l.name
    sparser = pruning.prune_magnitude(params, dense, 0.95)   # keeps 251 < 504
    assert masks.count(pruning.prune_to_sparsity(scores, sparser, 0.9))[0] == masks.count(sparser)[0]
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError):
            pruning.prune_to_sparsity(scores, dense, bad)


def small_tree():
    """Few leaf shapes: eager jax.random compiles once per shape, which is slow on CPU."""
    rng = np.random.default_rng(7)
    shapes = {"a": {"kernel": (6, 5)}, "b": {"bias": (4,), "kernel": (5, 4)}, "c": {"kernel": (3, 3, 2, 4)}}
    return jax.tree.map(lambda s: jnp.asarray(rng.standard_normal(s), jnp.float32), shapes,
                        is_leaf=lambda x: isinstance(x, tuple))


def test_random_prune_and_permute_keep_layer_counts():
    params = small_tree()
    mask = pruning.prune_magnitude(params, masks.build(params), 0.5)
    before = {l.name: l.kept for l in masks.layer_report(mask)}
    assert list(before) == ["a/kernel", "b/kernel", "c/kernel"] and sum(before.values()) == 122 - 61

    rand = pruning.random_prune(mask, 0.2, jax.random.key(3))
    for l in masks.layer_report(rand):
        assert l.kept == before[l.name] - math.ceil(0.2 * before[l.name]), l.name
    old_k, rand_k = kernels(mask), kernels(rand)
    for name in old_k:
        assert not np.any(rand_k[name] & ~old_k[name])
    assert all(m.all() for m in non_kernels(rand).values())
    again = pruning.random_prune(mask, 0.2, jax.random.key(3))
    other = pruning.random_prune(mask, 0.2, jax.random.key(4))
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(rand), jax.tree.leaves(again)))
    assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(rand), jax.tree.leaves(other)))
    # Random, not magnitude: some kept weight is smaller than some pruned one.
    w = kernels(params)
    assert (min(np.abs(w[n][rand_k[n]]).min() for n in w)
            < max(np.abs(w[n][old_k[n] & ~rand_k[n]]).max() for n in w))

    perm = pruning.permute_within_layers(mask, jax.random.key(5))
    assert [(l.name, l.kept) for l in masks.layer_report(perm)] == list(before.items())
    perm_k = kernels(perm)
    assert all(not np.array_equal(perm_k[n], old_k[n]) for n in old_k)
    for name, m in non_kernels(perm).items():
        np.testing.assert_array_equal(m, non_kernels(mask)[name])
    masks.validate(perm, params)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.2, 1.2, float("nan")])
def test_fraction_outside_open_interval_raises(resnet8_variables, fraction):
    params = resnet8_variables["params"]
    dense = masks.build(params)
    with pytest.raises(ValueError, match="prune_fraction"):
        pruning.prune_magnitude(params, dense, fraction)
    with pytest.raises(ValueError, match="prune_fraction"):
        pruning.prune_fraction(pruning.magnitude_scores(params), dense, fraction, scope="layer")
    with pytest.raises(ValueError, match="prune_fraction"):
        pruning.random_prune(masks.build(small_tree()), fraction, jax.random.key(0))


def test_bad_scope_and_mismatched_mask_raise(resnet8_variables):
    params = resnet8_variables["params"]
    with pytest.raises(ValueError, match="scope"):
        pruning.prune_magnitude(params, masks.build(params), 0.2, scope="block")
    with pytest.raises(ValueError, match="head/kernel"):
        pruning.prune_magnitude(params, {**masks.build(params), "head": {"bias": jnp.ones(10, bool)}}, 0.2)
