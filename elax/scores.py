"""Pruning-at-initialization scores (SNIP, GraSP, SynFlow) and iterative SynFlow pruning.

Score functions are pure: `(apply_fn, params, batch_stats, ...) -> tree shaped like params`, higher = keep (the
convention of `elax.pruning`; non-prunable leaves get a score too, pruning ignores it).
- `apply_fn(variables, images, train=False) -> logits` is a Flax `model.apply`. BatchNorm always runs in eval
  mode on the given `batch_stats`, as in the official E-LTH code; nothing is mutated.
- `batches` is an iterable of `(images, labels)`: normalized float images [B, H, W, C] and int labels [B].
- `mask` (optional) restricts the network: scores are those of the loss of `params * mask` seen as a function of
  the alive weights, so pruned weights score exactly 0.
Compiled functions are cached per `apply_fn` object, so repeated calls with the same `model.apply` (dense or
masked, any sparsity) compile once.
"""

import dataclasses
import functools
from typing import Iterable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from elax import masks as masks_lib
from elax import pruning
from elax.masks import Predicate, default_prunable

GRASP_VARIANTS = ("original", "elth_abs")


@functools.lru_cache(maxsize=16)
def _loss_derivatives(apply_fn, temperature: float):
    """Jitted per-batch (gradient, Hessian-vector product) of the masked loss, compiled once per model.

    loss(params, mask, batch_stats, images, labels) = mean CE(logits / temperature), BN in eval mode, on
    params * mask; the mask is an argument (not a constant) so dense and masked calls share one compilation.
    """

    def loss(params, mask, batch_stats, images, labels):
        variables = {"params": masks_lib.apply(params, mask), "batch_stats": batch_stats}
        logits = apply_fn(variables, images, train=False)
        return optax.softmax_cross_entropy_with_integer_labels(logits / temperature, labels).mean()

    grad = jax.grad(loss)

    def hvp(params, mask, batch_stats, images, labels, vector):
        # Forward-over-reverse: the JVP of the gradient along `vector` is H @ vector, without forming H.
        return jax.jvp(lambda p: grad(p, mask, batch_stats, images, labels), (params,), (vector,))[1]

    return jax.jit(grad), jax.jit(hvp)


# Elementwise tree ops as one call per tree, not one compiled op per leaf shape (the same values).
_add = jax.jit(lambda a, b: jax.tree.map(jnp.add, a, b))
_product = jax.jit(lambda a, b: jax.tree.map(jnp.multiply, a, b))
_abs_product = jax.jit(lambda a, b: jax.tree.map(lambda x, y: jnp.abs(x * y), a, b))


def _sum_over(fn, batches):
    """Sum of the trees `fn(images, labels)` over all batches."""
    total = None
    for images, labels in batches:
        tree = fn(jnp.asarray(images), jnp.asarray(labels))
        total = tree if total is None else _add(total, tree)
    if total is None:
        raise ValueError("No batches given: scores need at least one (images, labels) batch.")
    return total


def _dense_if_none(params, mask):
    return masks_lib.build(params) if mask is None else mask


def snip_scores(apply_fn, params, batch_stats, batches: Iterable, mask=None):
    """SNIP: |g * w|, g = gradient of the mean cross-entropy summed over all `batches` (E-LTH: one epoch)."""
    mask = _dense_if_none(params, mask)
    grad, _ = _loss_derivatives(apply_fn, 1.0)
    grads = _sum_over(lambda x, y: grad(params, mask, batch_stats, x, y), batches)
    return _abs_product(grads, masks_lib.apply(params, mask))


def _zero_where(tree, keep_fn):
    """`tree` with the leaves for which keep_fn(path, leaf) is False set to zero."""
    return jax.tree_util.tree_map_with_path(lambda p, x: x if keep_fn(p, x) else jnp.zeros_like(x), tree)


def grasp_scores(apply_fn, params, batch_stats, batches: Iterable, mask=None, *, temperature: float = 200.0,
                 variant: str = "original", prunable: Predicate = default_prunable):
    """GraSP (Wang, Zhang, Grosse 2020) keep-scores from Hg, the Hessian-gradient product of the loss.

    g = gradient of CE(logits / temperature) summed over `batches`, restricted to the prunable weights (as
    GraSP differentiates the conv/linear weights only); Hg = sum over the same batches of H_b g.
    variant="original": GraSP removes the weights with the largest S = -w * Hg, so the keep-score is w * Hg.
    variant="elth_abs": the official E-LTH code keeps the largest |w * Hg|. The absolute value changes which
    weights go: a weight with a very negative w * Hg is removed first by GraSP but kept by E-LTH.
    BN runs in eval mode as in the E-LTH code (the original GraSP code used batch statistics).
    `batches` is read twice (an iterator is first stored in a list).
    """
    if variant not in GRASP_VARIANTS:
        raise ValueError(f"variant must be one of {GRASP_VARIANTS}, got {variant!r}.")
    if iter(batches) is batches:
        batches = list(batches)
    mask = _dense_if_none(params, mask)
    grad, hvp = _loss_derivatives(apply_fn, float(temperature))
    g = _zero_where(_sum_over(lambda x, y: grad(params, mask, batch_stats, x, y), batches), prunable)
    hg = _sum_over(lambda x, y: hvp(params, mask, batch_stats, x, y, g), batches)
    w = masks_lib.apply(params, mask)
    return _product(w, hg) if variant == "original" else _abs_product(w, hg)


def _float64_apply(apply_fn):
    """A float64 clone of a bound Flax `Module.apply` whose module has a `dtype` field; otherwise `apply_fn`.

    Registry models cast inputs and params to their `dtype`, so float64 inputs alone would not raise precision.
    """
    module = getattr(apply_fn, "__self__", None)
    if isinstance(module, nn.Module) and "dtype" in {f.name for f in dataclasses.fields(module)}:
        return module.clone(dtype=jnp.float64).apply
    return apply_fn


def _check_finite(scores) -> None:
    """Raise rather than rank overflowed scores (inf/nan would silently decide which weights go)."""
    bad = [masks_lib.path_str(p) for p, s in jax.tree_util.tree_flatten_with_path(scores)[0]
           if not np.all(np.isfinite(s))]
    if bad:
        raise FloatingPointError(
            f"SynFlow scores overflowed at {bad[0]!r} (and {len(bad) - 1} more). Pass the bound `model.apply` "
            "of a Flax module with a `dtype` field, or an apply_fn that computes in its inputs' dtype, so "
            "SynFlow can run in float64."
        )


@functools.lru_cache(maxsize=16)
def _synflow_scorer(apply_fn, input_shape: tuple):
    """score(params, batch_stats, mask) -> SynFlow scores as numpy float64, compiled once per model."""
    apply64 = _float64_apply(apply_fn)

    @jax.jit
    def score(params, batch_stats, mask):
        to64 = lambda x: jnp.abs(x).astype(jnp.float64)
        # Like the original's linearize(): |.| of every param and BN buffer, then weights times mask.
        linear = jax.tree.map(lambda p, m: jnp.where(m, to64(p), 0.0), params, mask)
        stats = jax.tree.map(to64, batch_stats)

        def flow(theta):
            ones = jnp.ones((1, *input_shape), jnp.float64)
            return jnp.sum(apply64({"params": theta, "batch_stats": stats}, ones, train=False))

        return jax.tree.map(lambda g, w: jnp.abs(g * w), jax.grad(flow)(linear), linear)

    def run(params, batch_stats, mask):
        with jax.enable_x64(True):
            scores = jax.tree.map(np.asarray, score(params, batch_stats, mask))
        _check_finite(scores)
        return scores

    return run


def synflow_scores(apply_fn, params, batch_stats, input_shape, mask=None):
    """SynFlow (Tanaka et al. 2020): |dR/dθ * θ|, R = sum of the logits of an all-ones input, on |θ| * mask.

    Data-free; BN in eval mode on |batch_stats| (the original's default). Activations grow exponentially with
    depth and overflow float32 in deep ResNets, so the whole computation runs in float64 (`jax.enable_x64`
    context, and a float64 clone of the module, see `_float64_apply`); scores come back as numpy float64 arrays.
    No rescaling: BN biases make the network non-homogeneous, so a rescale would not be rank-preserving.
    """
    mask = masks_lib.build(params) if mask is None else mask
    return _synflow_scorer(apply_fn, tuple(input_shape))(params, batch_stats, mask)


def synflow_schedule(sparsity: float, rounds: int) -> list[float]:
    """Exponential schedule: the sparsity after round k = 1..rounds is 1 - (1 - sparsity) ** (k / rounds)."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}.")
    return [1.0 - (1.0 - sparsity) ** (k / rounds) for k in range(1, rounds + 1)]


def synflow_masks(apply_fn, params, batch_stats, input_shape, sparsity: float, *, rounds: int = 100,
                  prunable: Predicate = default_prunable, distribution: str = "global"):
    """Yield the mask after each round of iterative SynFlow, from the dense mask to `sparsity` (each round ranked
    as `pruning.prune_to_sparsity` does with `distribution`)."""
    score = _synflow_scorer(apply_fn, tuple(input_shape))
    mask = masks_lib.build(params)
    for target in synflow_schedule(sparsity, rounds):
        mask = pruning.prune_to_sparsity(score(params, batch_stats, mask), mask, target, prunable,
                                         distribution=distribution)
        yield mask


def synflow_prune(apply_fn, params, batch_stats, input_shape, sparsity: float, *, rounds: int = 100,
                  prunable: Predicate = default_prunable, distribution: str = "global"):
    """The mask of iterative SynFlow: `rounds` rounds of re-scoring the masked net and pruning (global scope).

    Keeps exactly round((1 - sparsity) * total) prunable weights; non-prunable leaves stay all-True.
    """
    for mask in synflow_masks(apply_fn, params, batch_stats, input_shape, sparsity, rounds=rounds, prunable=prunable,
                              distribution=distribution):
        pass
    return mask
