"""Tests for elax.masks: build, prunable predicates, exact counts, validation errors, apply."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from elax import masks
from elax.models import get_model

pytestmark = pytest.mark.smoke   # the first look: python -m pytest -m smoke

SHAPE = (8, 8, 3)
RESNET8_KERNELS = [
    "head/kernel",
    "stage1_block0/conv1/kernel", "stage1_block0/conv2/kernel",
    "stage2_block0/conv1/kernel", "stage2_block0/conv2/kernel", "stage2_block0/shortcut_conv/kernel",
    "stage3_block0/conv1/kernel", "stage3_block0/conv2/kernel", "stage3_block0/shortcut_conv/kernel",
    "stem_conv/kernel",
]


def abstract_params(name):
    model = get_model(name)
    return jax.eval_shape(lambda k: model.init(k, jnp.zeros((1, *SHAPE)), train=False), jax.random.key(0))["params"]


def hand_mask():
    """conv kernel 12 weights (7 kept), head kernel 6 (5 kept); a False in a BN scale that must not count."""
    conv = np.ones((2, 2, 1, 3), bool)
    conv.ravel()[[0, 3, 4, 8, 11]] = False
    head = np.ones((3, 2), bool)
    head[2, 1] = False
    return {
        "bn": {"bias": jnp.ones((3,), bool), "scale": jnp.asarray([True, False, True])},
        "conv": {"kernel": jnp.asarray(conv)},
        "head": {"bias": jnp.ones((2,), bool), "kernel": jnp.asarray(head)},
    }


def replace_leaf(tree, path, value):
    """Copy of nested dict `tree` with tree[path] = value (value None deletes it)."""
    out = jax.tree.map(lambda x: x, tree)
    node = out
    for key in path[:-1]:
        node = node[key]
    if value is None:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return out


def test_build_all_true_same_structure(resnet8_variables):
    params = resnet8_variables["params"]
    mask = masks.build(params)
    assert jax.tree.structure(mask) == jax.tree.structure(params)
    for m, p in zip(jax.tree.leaves(mask), jax.tree.leaves(params)):
        assert m.shape == p.shape and m.dtype == jnp.bool_
        assert bool(jnp.all(m))
    assert masks.count(mask) == (5036, 5036)
    assert masks.sparsity(mask) == 0.0
    masks.validate(mask, params)  # does not raise


def test_default_prunable_is_every_kernel(resnet8_variables):
    params = resnet8_variables["params"]
    leaves = masks.prunable_leaves(params)
    assert list(leaves) == RESNET8_KERNELS
    # 3*3*3*4 + 2*(9*4*4) + (9*4*8 + 9*8*8 + 4*8) + (9*8*16 + 9*16*16 + 8*16) + 16*10
    assert sum(x.size for x in leaves.values()) == 108 + 288 + 896 + 3584 + 160 == 5036
    no_head = masks.prunable_leaves(params, masks.prunable_kernels(exclude=("head",)))
    assert list(no_head) == RESNET8_KERNELS[1:]
    no_stem = masks.prunable_leaves(params, masks.prunable_kernels(exclude=("head", "stem_conv")))
    assert list(no_stem) == RESNET8_KERNELS[1:-1]


def test_counts_on_hand_made_mask():
    mask = hand_mask()
    assert masks.count(mask) == (12, 18)
    assert masks.sparsity(mask) == pytest.approx(6 / 18, abs=1e-12)
    report = masks.layer_report(mask)
    assert [(l.name, l.total, l.kept) for l in report] == [("conv/kernel", 12, 7), ("head/kernel", 6, 5)]
    assert report[0].density == pytest.approx(7 / 12) and report[1].density == pytest.approx(5 / 6)
    no_head = masks.prunable_kernels(exclude=("head",))
    assert masks.count(mask, no_head) == (7, 12)
    assert masks.sparsity(mask, no_head) == pytest.approx(5 / 12, abs=1e-12)
    text = masks.format_report(mask)
    assert "conv/kernel" in text and "all prunable" in text and "66.67%" in text
    assert masks.expected_sparsity(3) == pytest.approx(0.488, abs=1e-12)


def test_counts_refuse_params_given_for_a_mask(resnet8_variables):
    with pytest.raises(ValueError, match="Expected a mask .* but 'head/kernel' holds float32. Pass the mask"):
        masks.sparsity(resnet8_variables["params"])


def test_validate_missing_leaf_names_first(resnet8_variables):
    params = resnet8_variables["params"]
    mask = replace_leaf(masks.build(params), ("stage1_block0", "conv1", "kernel"), None)
    mask = replace_leaf(mask, ("head", "bias"), None)
    with pytest.raises(ValueError) as info:
        masks.validate(mask, params)
    assert "'head/bias'" in str(info.value) and "stage1_block0" not in str(info.value)
    assert "no leaf" in str(info.value)


def test_validate_wrong_shape(resnet8_variables):
    params = resnet8_variables["params"]
    mask = replace_leaf(masks.build(params), ("stage3_block0", "conv2", "kernel"), jnp.ones((3, 3, 16, 8), bool))
    mask = replace_leaf(mask, ("stem_conv", "kernel"), jnp.ones((3, 3, 3, 5), bool))   # later in tree order
    with pytest.raises(ValueError) as info:
        masks.validate(mask, params)
    message = str(info.value)
    assert "'stage3_block0/conv2/kernel'" in message and "stem_conv" not in message
    assert "(3, 3, 16, 8)" in message and "(3, 3, 16, 16)" in message


def test_validate_extra_leaf(resnet8_variables):
    params = resnet8_variables["params"]
    mask = masks.build(params)
    mask = {**mask, "zz": {"kernel": jnp.ones((2, 2), bool)},
            "stage4_block0": {"conv1": {"kernel": jnp.ones((3, 3, 16, 16), bool)}}}
    with pytest.raises(ValueError) as info:
        masks.validate(mask, params)
    message = str(info.value)
    assert "'stage4_block0/conv1/kernel'" in message and "lack" in message and "zz" not in message


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.int8, jnp.uint8])
def test_validate_non_bool(resnet8_variables, dtype):
    params = resnet8_variables["params"]
    mask = replace_leaf(masks.build(params), ("stem_conv", "kernel"), jnp.ones((3, 3, 3, 4), dtype))
    with pytest.raises(ValueError) as info:
        masks.validate(mask, params)
    assert "'stem_conv/kernel'" in str(info.value) and "bool" in str(info.value)
    mask = replace_leaf(mask, ("stage1_block0", "bn1", "scale"), jnp.ones((4,), dtype))   # earlier in tree order
    with pytest.raises(ValueError) as info:
        masks.validate(mask, params)
    assert "'stage1_block0/bn1/scale'" in str(info.value) and "stem_conv" not in str(info.value)


def test_mask_of_another_model(resnet8_variables):
    params8 = resnet8_variables["params"]
    mask14 = masks.build(abstract_params("cifar_resnet_14_4"))
    with pytest.raises(ValueError) as info:
        masks.validate(mask14, params8)
    assert "'stage1_block1/bn1/bias'" in str(info.value) and "another model" in str(info.value)
    with pytest.raises(ValueError) as info:
        masks.validate(masks.build(params8), abstract_params("cifar_resnet_14_4"))
    assert "'stage1_block1/bn1/bias'" in str(info.value) and "another model" in str(info.value)
    with pytest.raises(ValueError) as info:   # another width: first differing leaf in tree order
        masks.validate(masks.build(abstract_params("cifar_resnet_8_8")), params8)
    assert "'head/kernel'" in str(info.value) and "(32, 10)" in str(info.value)
    with pytest.raises(ValueError):
        masks.apply(params8, mask14)


def test_apply_zeros_exactly_false_positions(resnet8_variables):
    params = resnet8_variables["params"]
    leaves, treedef = jax.tree.flatten(params)
    rng = np.random.default_rng(0)
    mask = jax.tree.unflatten(treedef, [jnp.asarray(rng.random(p.shape) < 0.6) for p in leaves])
    out = masks.apply(params, mask)
    assert jax.tree.structure(out) == treedef
    zeros = 0
    for o, p, m in zip(jax.tree.leaves(out), leaves, jax.tree.leaves(mask)):
        o, p, m = np.asarray(o), np.asarray(p), np.asarray(m)
        assert o.dtype == p.dtype
        np.testing.assert_array_equal(o[m], p[m])
        np.testing.assert_array_equal(o[~m], 0.0)
        zeros += int(np.sum(o[~m] == 0))
    assert zeros == sum(int(np.sum(~np.asarray(m))) for m in jax.tree.leaves(mask)) > 0
