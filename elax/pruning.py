"""Scores -> masks. Pure functions over trees; a higher score means "keep".

Counts are exact: pruning a fraction f of the remaining weights removes exactly ceil(f * remaining) of them
(globally, or per layer), ties broken by position, so results do not depend on float ties.
"""

import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from elax import distributions, masks as masks_lib
from elax.masks import Predicate, default_prunable


def _flat(tree, prunable):
    """(treedef, leaves, is_prunable flags, path strings) of `tree` with leaves as numpy arrays."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
    leaves = [np.asarray(leaf) for _, leaf in flat]
    return treedef, leaves, [prunable(path, leaf) for path, leaf in flat], [masks_lib.path_str(p) for p, _ in flat]


def _check_finite(paths, score_leaves, mask_leaves, is_prunable) -> None:
    """NaN/inf scores of alive weights (e.g. the weights of a diverged run) would be ranked silently: refuse."""
    for path, score, alive, prunable in zip(paths, score_leaves, mask_leaves, is_prunable):
        if prunable and not np.all(np.isfinite(score[alive])):
            raise ValueError(f"Pruning scores of {path!r} are NaN or infinite (did the training diverge?); "
                             "refusing to prune on them.")


def _keep_top(scores: np.ndarray, alive: np.ndarray, n_keep: int) -> np.ndarray:
    """Bool array keeping the `n_keep` highest-scoring alive entries (stable: earlier entries win ties)."""
    ranked = np.where(alive, scores.astype(np.float64), -np.inf)
    order = np.argsort(-ranked, kind="stable")
    keep = np.zeros(scores.size, bool)
    keep[order[:n_keep]] = True
    return keep & alive


def keep_top(scores, mask, n_keep_fn, prunable: Predicate = default_prunable, scope: str = "global",
             layer_n_keep: Callable[[str], Callable | None] = lambda path: None):
    """The mask that keeps, among weights alive in `mask`, the top `n_keep_fn(alive, size)` by score.

    scope="global" ranks all prunable weights together; scope="layer" ranks each prunable leaf on its own. A leaf
    for which `layer_n_keep(path)` gives a function is ranked on its own with that function instead. Non-prunable
    leaves come back all-True.
    """
    masks_lib.validate(mask, scores)
    treedef, score_leaves, is_prunable, paths = _flat(scores, prunable)
    mask_leaves = [np.asarray(m) for m in jax.tree.leaves(mask)]
    _check_finite(paths, score_leaves, mask_leaves, is_prunable)
    if scope not in ("global", "layer"):
        raise ValueError(f"scope must be 'global' or 'layer', got {scope!r}.")
    out = [np.ones(m.shape, bool) for m in mask_leaves]
    own = [i for i, p in enumerate(is_prunable) if p and layer_n_keep(paths[i])]
    pooled = [i for i, p in enumerate(is_prunable) if p and i not in own]
    groups = [([i], layer_n_keep(paths[i])) for i in own]
    groups += [(pooled, n_keep_fn)] if scope == "global" and pooled else [([i], n_keep_fn) for i in pooled]
    for group, n_keep in groups:
        s = np.concatenate([score_leaves[i].ravel() for i in group])
        alive = np.concatenate([mask_leaves[i].ravel() for i in group])
        keep = _keep_top(s, alive, n_keep(int(alive.sum()), alive.size))
        for i, piece in zip(group, np.split(keep, np.cumsum([mask_leaves[i].size for i in group])[:-1])):
            out[i] = piece.reshape(mask_leaves[i].shape)
    return jax.tree_util.tree_unflatten(treedef, [jax.device_put(m) for m in out])   # no compile per shape


def fraction_of(layer_fractions: dict) -> Callable[[str], float | None]:
    """path -> the fraction of the first `layer_fractions` prefix it lies under, or None."""
    def lookup(path: str) -> float | None:
        return next((f for prefix, f in layer_fractions.items() if masks_lib.under(path, prefix)), None)
    return lookup


def prune_fraction(scores, mask, fraction: float, prunable: Predicate = default_prunable, scope="global",
                   layer_fractions: dict | None = None):
    """Remove exactly ceil(fraction * remaining) of the alive weights with the lowest scores; the leaves under a
    prefix of `layer_fractions` ({prefix: fraction}) are pruned on their own, at their own fraction."""
    masks_lib.check_fraction(fraction)
    removing = lambda f: (lambda alive, size: alive - math.ceil(f * alive))
    lookup = fraction_of(layer_fractions or {})
    for f in (layer_fractions or {}).values():
        masks_lib.check_fraction(f)
    return keep_top(scores, mask, removing(fraction), prunable, scope,
                    lambda path: removing(lookup(path)) if lookup(path) is not None else None)


def prune_to_sparsity(scores, mask, sparsity: float, prunable: Predicate = default_prunable, scope="global",
                      distribution: str = "global"):
    """Keep the round((1 - sparsity) * total) highest-scoring alive weights: ranked over every prunable weight
    ("global"), or within each layer at the kept counts of a per-layer `distribution` ("uniform", "erk";
    `elax.distributions`). scope="layer" with "global" keeps round((1 - sparsity) * size) in every layer.

    One-shot baselines start from the dense mask; a sparser `mask` keeps at most its alive weights.
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}.")
    if distribution != "global":
        shapes = {path: np.shape(leaf) for path, leaf in masks_lib.prunable_leaves(mask, prunable).items()}
        counts = distributions.kept_counts(shapes, sparsity, distribution)
        layer = lambda path: (lambda alive, size: min(alive, counts[path]))
        return keep_top(scores, mask, None, prunable, "layer", layer)
    n_keep = lambda alive, size: min(alive, round((1.0 - sparsity) * size))
    return keep_top(scores, mask, n_keep, prunable, scope)


def random_scores(tree, key):
    """Uniform random scores shaped like `tree`, from one flat draw (one RNG call, not one compilation per leaf
    shape)."""
    sizes = [np.size(leaf) for leaf in jax.tree.leaves(tree)]
    flat = np.asarray(jax.random.uniform(key, (sum(sizes),)))
    pieces = np.split(flat, np.cumsum(sizes)[:-1])
    return jax.tree.unflatten(jax.tree.structure(tree),
                              [p.reshape(np.shape(leaf)) for p, leaf in zip(pieces, jax.tree.leaves(tree))])


def magnitude_scores(params):
    """|w|: the score of magnitude pruning, as numpy arrays (pruning ranks on the host; nothing to compile)."""
    return jax.tree.map(lambda p: np.abs(np.asarray(p)), params)


def prune_magnitude(params, mask, fraction: float, prunable: Predicate = default_prunable, scope="global",
                    layer_fractions: dict | None = None):
    """One IMP pruning step: remove `fraction` of the remaining weights with the smallest |w| (per-layer
    fractions as in `prune_fraction`)."""
    return prune_fraction(magnitude_scores(params), mask, fraction, prunable, scope, layer_fractions)


def permute_within_layers(mask, key, prunable: Predicate = default_prunable):
    """Randomly permute each prunable leaf of `mask`: same per-layer density, random positions."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(mask)
    which = tuple(bool(prunable(path, m)) for path, m in flat)
    return jax.tree_util.tree_unflatten(treedef, _permute_leaves(key, [m for _, m in flat], which))


@functools.partial(jax.jit, static_argnums=2)
def _permute_leaves(key, leaves, which):
    # One program per tree, not one per leaf shape (each compiles slowly on a GPU).
    keys = jax.random.split(key, len(leaves))
    return [jax.random.permutation(k, jnp.ravel(m)).reshape(m.shape) if w else m
            for k, m, w in zip(keys, leaves, which)]


def random_prune(mask, fraction: float, key, prunable: Predicate = default_prunable):
    """Remove ceil(fraction * remaining) alive weights uniformly at random in every layer (keeps layer density)."""
    masks_lib.check_fraction(fraction)
    return prune_fraction(random_scores(mask, key), mask, fraction, prunable, scope="layer")
