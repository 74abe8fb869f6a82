"""Tests for elax.scores: SNIP, GraSP and SynFlow against hand computations, and exact sparsities."""

import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from elax import masks, models, pruning, scores

RNG = np.random.default_rng(0)
SHAPE = (8, 8, 3)


class Linear(nn.Module):
    """logits = flatten(x) @ W + b."""

    classes: int = 4
    use_bias: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train=False):
        x = x.reshape(x.shape[0], -1).astype(self.dtype)
        return nn.Dense(self.classes, use_bias=self.use_bias, dtype=self.dtype, name="dense")(x)


class TwoLayer(nn.Module):
    """Dense -> BatchNorm -> activation -> Dense."""

    hidden: int = 4
    classes: int = 3
    use_bias: bool = False
    act: Any = nn.relu
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train=False):
        x = x.reshape(x.shape[0], -1).astype(self.dtype)
        x = nn.Dense(self.hidden, use_bias=self.use_bias, dtype=self.dtype, name="fc1")(x)
        x = nn.BatchNorm(use_running_average=not train, epsilon=1e-5, dtype=self.dtype, name="bn")(x)
        x = nn.Dense(self.classes, use_bias=self.use_bias, dtype=self.dtype, name="fc2")(self.act(x))
        return x.astype(jnp.float32)


class Chain(nn.Module):
    """`depth` bias-free 4x4 Dense layers with every weight equal to 10."""

    depth: int = 40
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train=False):
        x = x.reshape(x.shape[0], -1).astype(self.dtype)
        for i in range(self.depth):
            x = nn.Dense(4, use_bias=False, kernel_init=nn.initializers.constant(10.0), dtype=self.dtype,
                         name=f"fc{i}")(x)
        return x.astype(jnp.float32)


def _init(module, input_shape, seed=0):
    variables = module.init(jax.random.key(seed), jnp.zeros((1, *input_shape)), train=False)
    return variables["params"], variables.get("batch_stats", {})


def _batches(n, batch_size, input_shape, classes):
    return [
        (RNG.normal(size=(batch_size, *input_shape)).astype(np.float32), RNG.integers(0, classes, batch_size))
        for _ in range(n)
    ]


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _linear_grads(w, b, batches):
    """Gradients of the mean cross-entropy of x @ w + b, summed over batches (closed form, float64)."""
    gw, gb = np.zeros_like(w), np.zeros_like(b)
    for images, labels in batches:
        x = images.reshape(len(images), -1).astype(np.float64)
        delta = (_softmax(x @ w + b) - np.eye(w.shape[1])[labels]) / len(x)
        gw, gb = gw + x.T @ delta, gb + delta.sum(0)
    return gw, gb


# ---------------------------------------------------------------- SNIP


@pytest.fixture(scope="module")
def linear():
    params, _ = _init(Linear(), (1, 1, 3))
    params = {"dense": {"kernel": params["dense"]["kernel"],
                        "bias": jnp.asarray(RNG.normal(size=4), jnp.float32)}}
    return Linear().apply, params, _batches(2, 3, (1, 1, 3), 4)


def test_snip_equals_hand_gradient_times_weight(linear):
    apply_fn, params, batches = linear
    w, b = (np.asarray(params["dense"][k], np.float64) for k in ("kernel", "bias"))
    gw, gb = _linear_grads(w, b, batches)
    got = scores.snip_scores(apply_fn, params, {}, batches)
    np.testing.assert_allclose(got["dense"]["kernel"], np.abs(gw * w), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got["dense"]["bias"], np.abs(gb * b), rtol=1e-5, atol=1e-7)


def test_snip_with_mask_scores_the_masked_network(linear):
    apply_fn, params, batches = linear
    mask = masks.build(params)
    kernel_mask = np.ones((3, 4), bool)
    kernel_mask[0, 1] = kernel_mask[2, 3] = False
    mask["dense"]["kernel"] = jnp.asarray(kernel_mask)
    w = np.asarray(params["dense"]["kernel"], np.float64) * kernel_mask
    gw, _ = _linear_grads(w, np.asarray(params["dense"]["bias"], np.float64), batches)
    got = np.asarray(scores.snip_scores(apply_fn, params, {}, batches, mask)["dense"]["kernel"])
    np.testing.assert_allclose(got, np.abs(gw * w), rtol=1e-5, atol=1e-7)
    assert got[0, 1] == 0.0 and got[2, 3] == 0.0


def test_snip_without_batches_raises(linear):
    apply_fn, params, _ = linear
    with pytest.raises(ValueError, match="No batches"):
        scores.snip_scores(apply_fn, params, {}, [])


# ---------------------------------------------------------------- GraSP


def test_grasp_variants_remove_different_weights():
    # Linear 2 -> 2 net, one example x = (1, 1) of class 0. Closed form: with A = diag(p) - p p^T and
    # g = x (p - y)^T, Hg = x |x|^2 (A (p - y))^T = 4 p0 p1^2 [[-1, 1], [-1, 1]],
    # so w * Hg ∝ [[-2, .1], [-.5, -.2]].
    w = np.array([[2.0, 0.1], [0.5, -0.2]], np.float32)
    params = {"dense": {"kernel": jnp.asarray(w)}}
    batches = [(np.ones((1, 1, 1, 2), np.float32), np.array([0]))]
    apply_fn = Linear(classes=2, use_bias=False).apply
    p = _softmax(np.ones(2) @ w.astype(np.float64))
    hg = 4 * p[0] * p[1] ** 2 * np.array([[-1.0, 1.0], [-1.0, 1.0]])

    original = scores.grasp_scores(apply_fn, params, {}, batches, temperature=1.0)
    elth = scores.grasp_scores(apply_fn, params, {}, batches, temperature=1.0, variant="elth_abs")
    np.testing.assert_allclose(original["dense"]["kernel"], w * hg, rtol=1e-5)
    np.testing.assert_allclose(elth["dense"]["kernel"], np.abs(w * hg), rtol=1e-5)

    removed = lambda s: ~np.asarray(pruning.prune_to_sparsity(s, masks.build(params), 0.25)["dense"]["kernel"])
    # GraSP removes the largest -w*Hg: the big weight w[0, 0]; E-LTH removes the smallest |w*Hg|: w[0, 1].
    np.testing.assert_array_equal(removed(original), [[True, False], [False, False]])
    np.testing.assert_array_equal(removed(elth), [[False, True], [False, False]])


def _explicit_grasp(module, params, batches, temperature):
    """w * (H g) with H from jax.hessian, g restricted to the kernels, both summed over batches."""
    flat, unravel = ravel_pytree(params)

    def loss(theta, images, labels):
        logits = module.apply({"params": unravel(theta), "batch_stats": {}}, images) / temperature
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1))

    grad, hessian = jax.jit(jax.grad(loss)), jax.jit(jax.hessian(loss))
    g = sum(grad(flat, jnp.asarray(x), jnp.asarray(y)) for x, y in batches)
    is_kernel = ravel_pytree(jax.tree_util.tree_map_with_path(
        lambda path, leaf: jnp.full(leaf.shape, masks.path_str(path).endswith("kernel"), leaf.dtype), params))[0]
    hg = sum(hessian(flat, jnp.asarray(x), jnp.asarray(y)) @ (g * is_kernel) for x, y in batches)
    return unravel(flat * hg)


class Tanh2(nn.Module):
    """Dense(bias) -> tanh -> Dense(bias): a net with a non-trivial Hessian and non-prunable biases."""

    @nn.compact
    def __call__(self, x, train=False):
        x = jnp.tanh(nn.Dense(4, name="fc1")(x.reshape(x.shape[0], -1)))
        return nn.Dense(3, name="fc2")(x)


def test_grasp_hg_matches_explicit_hessian():
    module = Tanh2()
    params, _ = _init(module, (1, 1, 3))
    params = jax.tree.map(lambda p: p + jnp.asarray(RNG.normal(size=p.shape) * 0.5, p.dtype), params)
    batches = _batches(2, 5, (1, 1, 3), 3)
    expected = _explicit_grasp(module, params, batches, temperature=2.0)
    got = scores.grasp_scores(module.apply, params, {}, batches, temperature=2.0)
    for layer in ("fc1", "fc2"):
        np.testing.assert_allclose(got[layer]["kernel"], expected[layer]["kernel"], rtol=1e-4, atol=1e-7)
    # An iterator is read twice all the same.
    from_iter = scores.grasp_scores(module.apply, params, {}, iter(batches), temperature=2.0)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), from_iter, got)


def test_grasp_rejects_unknown_variant(linear):
    apply_fn, params, batches = linear
    with pytest.raises(ValueError, match="variant"):
        scores.grasp_scores(apply_fn, params, {}, batches, variant="abs")


# ---------------------------------------------------------------- SynFlow


def test_synflow_matches_hand_computation_with_bn_and_mask():
    module = TwoLayer(hidden=4, classes=3)
    params, stats = _init(module, (1, 1, 2))
    params = jax.tree.map(lambda p: jnp.asarray(RNG.normal(size=p.shape), p.dtype), params)
    # Signed BN state: SynFlow takes |.| of every param and buffer (running mean included).
    stats = {"bn": {"mean": jnp.asarray([-0.1, 0.2, -0.05, 0.1]), "var": jnp.asarray([0.5, 1.0, 2.0, 4.0])}}
    mask = masks.build(params)
    fc1_mask = np.array([[True, False, True, True], [True, True, True, False]])
    mask["fc1"]["kernel"] = jnp.asarray(fc1_mask)

    w1 = np.abs(np.asarray(params["fc1"]["kernel"], np.float64)) * fc1_mask
    w2 = np.abs(np.asarray(params["fc2"]["kernel"], np.float64))
    gamma, beta = (np.abs(np.asarray(params["bn"][k], np.float64)) for k in ("scale", "bias"))
    mean, var = (np.abs(np.asarray(stats["bn"][k], np.float64)) for k in ("mean", "var"))
    h = np.ones(2) @ w1                                  # R = relu(bn(1^T |W1|)) |W2| 1
    slope = gamma / np.sqrt(var + 1e-5)
    z = (h - mean) * slope + beta
    assert np.all(z > 0)                                 # ReLU is the identity on this path
    r = w2.sum(1)                                        # dR/dz
    expected_w1 = w1 * (np.ones(2)[:, None] * (r * slope)[None, :])
    expected_w2 = w2 * z[:, None]

    got = scores.synflow_scores(module.apply, params, stats, (1, 1, 2), mask)
    np.testing.assert_allclose(got["fc1"]["kernel"], expected_w1, rtol=1e-5, atol=1e-12)
    np.testing.assert_allclose(got["fc2"]["kernel"], expected_w2, rtol=1e-5)
    assert got["fc1"]["kernel"][0, 1] == 0.0 and got["fc1"]["kernel"][1, 3] == 0.0
    np.testing.assert_allclose(got["bn"]["bias"], beta * r, rtol=1e-5)


def test_synflow_runs_in_float64_where_float32_overflows():
    # Every score of the 40-layer chain is w * dR/dw = 10 * 40^(l-1) * 40^(40-l) = 40^40 / 4 ≈ 3e63,
    # far above the float32 maximum (3.4e38).
    module = Chain(depth=40)
    params, _ = _init(module, (1, 1, 4))
    got = scores.synflow_scores(module.apply, params, {}, (1, 1, 4))
    for leaf in jax.tree.leaves(got):
        assert leaf.dtype == np.float64
        np.testing.assert_allclose(leaf, np.full((4, 4), 40.0 ** 40 / 4), rtol=1e-12)
    # An apply_fn that forces float32 cannot be upgraded: overflow is reported, not ranked.
    float32_apply = lambda variables, x, train=False: module.apply(variables, x.astype(jnp.float32), train=train)
    with pytest.raises(FloatingPointError, match="overflowed"):
        scores.synflow_scores(float32_apply, params, {}, (1, 1, 4))


def test_synflow_schedule_is_exponential():
    got = scores.synflow_schedule(0.9, 4)
    np.testing.assert_allclose(got, [1 - 0.1 ** 0.25, 1 - 0.1 ** 0.5, 1 - 0.1 ** 0.75, 0.9], rtol=1e-12)
    with pytest.raises(ValueError):
        scores.synflow_schedule(0.9, 0)


def test_synflow_first_round_prunes_by_dense_scores():
    module = TwoLayer(hidden=8, classes=3)
    params, stats = _init(module, (1, 1, 5))
    dense_scores = scores.synflow_scores(module.apply, params, stats, (1, 1, 5))
    expected = pruning.prune_to_sparsity(dense_scores, masks.build(params), 0.5)
    got = scores.synflow_prune(module.apply, params, stats, (1, 1, 5), 0.5, rounds=1)
    jax.tree.map(np.testing.assert_array_equal, got, expected)


# ---------------------------------------------------------------- a real ResNet


@pytest.fixture(scope="module")
def resnet(resnet8_variables):
    """(apply_fn, params, batch_stats) of cifar_resnet_8_4 on 8x8x3 inputs (variables from conftest)."""
    variables = resnet8_variables
    return models.get_model("cifar_resnet_8_4").apply, variables["params"], variables["batch_stats"]


def _assert_like_params(score_tree, params):
    assert jax.tree.structure(score_tree) == jax.tree.structure(params)
    for s, p in zip(jax.tree.leaves(score_tree), jax.tree.leaves(params)):
        assert np.shape(s) == np.shape(p) and np.all(np.isfinite(s))


def _assert_exact_sparsity(mask, sparsity, prunable=masks.default_prunable):
    kept, total = masks.count(mask, prunable)
    assert kept == round((1 - sparsity) * total)
    flat = jax.tree_util.tree_flatten_with_path(mask)[0]
    assert all(np.all(m) for path, m in flat if not prunable(path, m))


@pytest.mark.parametrize("name", ["snip", "grasp_original", "grasp_elth_abs"])
def test_data_scores_on_resnet(resnet, name):
    apply_fn, params, stats = resnet
    batches = _batches(2, 4, SHAPE, 10)
    if name == "snip":
        score_fn = lambda mask=None: scores.snip_scores(apply_fn, params, stats, batches, mask)
    else:
        variant = name.removeprefix("grasp_")
        score_fn = lambda mask=None: scores.grasp_scores(apply_fn, params, stats, batches, mask, variant=variant)
    dense = score_fn()
    _assert_like_params(dense, params)
    mask = pruning.prune_to_sparsity(dense, masks.build(params), 0.8)
    _assert_exact_sparsity(mask, 0.8)
    # Rescoring the pruned net gives the pruned weights a score of exactly zero.
    pruned_scores = score_fn(mask)
    for s, m in zip(jax.tree.leaves(pruned_scores), jax.tree.leaves(mask)):
        assert np.all(np.asarray(s)[~np.asarray(m)] == 0)


def test_synflow_scores_on_resnet(resnet):
    apply_fn, params, stats = resnet
    _assert_like_params(scores.synflow_scores(apply_fn, params, stats, SHAPE), params)


def test_synflow_masks_only_shrink_and_follow_schedule(resnet):
    apply_fn, params, stats = resnet
    rounds = list(scores.synflow_masks(apply_fn, params, stats, SHAPE, 0.95, rounds=5))
    assert len(rounds) == 5
    previous = masks.build(params)
    for mask, target in zip(rounds, scores.synflow_schedule(0.95, 5)):
        _assert_exact_sparsity(mask, target)
        for now, before in zip(jax.tree.leaves(mask), jax.tree.leaves(previous)):
            assert not np.any(np.asarray(now) & ~np.asarray(before))
        previous = mask


def test_synflow_prune_100_rounds_hits_sparsity_exactly(resnet):
    apply_fn, params, stats = resnet
    prunable = masks.prunable_kernels(exclude=("head",))
    start = time.perf_counter()
    mask = scores.synflow_prune(apply_fn, params, stats, SHAPE, 0.9, rounds=100, prunable=prunable)
    assert time.perf_counter() - start < 60  # ~1 s here once compiled
    _assert_exact_sparsity(mask, 0.9, prunable)
    assert np.all(mask["head"]["kernel"])
    masks.validate(mask, params)
