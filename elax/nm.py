"""N:M structured sparsity: in every group of M consecutive weights along a kernel's input axis, at most N are kept
(NVIDIA's sparse tensor cores run 2:4).

Groups run along the input-channel axis of a convolution kernel (kh, kw, in, out), at each spatial tap and output
channel, as NVIDIA's 2:4 does, and along the first axis of any other kernel (a dense layer's inputs). A layer whose
input axis M does not divide is left dense (`divisible`), and elax says so when a run starts.

IMP reaches N:M over its levels by magnitude within each group (`schedule`): each level keeps
max(N, min(k - 1, round(k x (1 - prune_fraction)))) of the k weights a group kept before, so the per-level fraction
applies to the kept count of a group, at least one weight goes per level until N remain, and every level's mask
is a k:M pattern. With M = 8 and the paper's 0.2: 8 -> 6 -> 5 -> 4 -> 3 -> 2 -> 1; with 0.5: 8 -> 4 -> 2 -> 1.
"""

import functools
import re

import jax
import numpy as np

from elax import masks as masks_lib

UNSTRUCTURED = "unstructured"
_PATTERN = re.compile(r"(\d+):(\d+)")


def parse(structure: str) -> tuple[int, int] | None:
    """(N, M) of an "N:M" structure; None for "unstructured"; ValueError for anything else."""
    if structure == UNSTRUCTURED:
        return None
    match = _PATTERN.fullmatch(str(structure))
    if not match or not 1 <= int(match[1]) < int(match[2]):
        raise ValueError(f"structure must be 'unstructured' or 'N:M' with 1 <= N < M (e.g. '2:4'), got "
                         f"{structure!r}.")
    return int(match[1]), int(match[2])


def group_axis(shape: tuple) -> int:
    """The axis along which a kernel's groups of M run: input channels of a conv, the first axis otherwise."""
    return len(shape) - 2 if len(shape) == 4 else 0


def divisible(shape: tuple, m: int) -> bool:
    return shape[group_axis(shape)] % m == 0


@functools.lru_cache(maxsize=None)
def grouped_prunable(prunable: masks_lib.Predicate, m: int) -> masks_lib.Predicate:
    """`prunable` less the layers whose group axis `m` does not divide (they are left dense); one predicate per
    (prunable, m), so that caches keyed by it are shared."""
    return lambda path, leaf: prunable(path, leaf) and divisible(np.shape(leaf), m)


def schedule(n: int, m: int, fraction: float, levels: int) -> list[int]:
    """Weights kept per group after levels 0, 1, ..., `levels` (level 0: all M)."""
    kept = [m]
    for _ in range(levels):
        k = kept[-1]
        kept.append(max(n, min(k - 1, round(k * (1.0 - fraction)))))
    return kept


def _grouped(array: np.ndarray, m: int) -> np.ndarray:
    """[..., groups, m] view of `array` with its group axis last."""
    moved = np.moveaxis(array, group_axis(array.shape), -1)
    return moved.reshape(*moved.shape[:-1], moved.shape[-1] // m, m)


def _ungrouped(grouped: np.ndarray, shape: tuple) -> np.ndarray:
    axis = group_axis(shape)
    moved_shape = tuple(np.moveaxis(np.empty(shape, bool), axis, -1).shape)
    return np.moveaxis(grouped.reshape(moved_shape), -1, axis)


def keep_top_per_group(scores: np.ndarray, alive: np.ndarray, k: int, m: int) -> np.ndarray:
    """Bool array keeping, in every group of `m`, the `k` highest-scoring alive entries (all alive ones if fewer;
    ties by position)."""
    s = _grouped(np.where(alive, np.asarray(scores, np.float64), -np.inf), m)
    ranks = np.argsort(np.argsort(-s, axis=-1, kind="stable"), axis=-1, kind="stable")
    keep = (ranks < k) & _grouped(np.asarray(alive, bool), m)
    return _ungrouped(keep, scores.shape)


def prune(scores, mask, k: int, m: int, prunable: masks_lib.Predicate):
    """`mask` with every group of `m` of every prunable leaf cut to its `k` highest-scoring alive weights (higher
    score = keep). Leaves that are not prunable come back as they are."""
    masks_lib.validate(mask, scores)
    flat, treedef = jax.tree_util.tree_flatten_with_path(mask)
    out = [keep_top_per_group(np.asarray(s), np.asarray(a), k, m) if prunable(path, a) else np.asarray(a)
           for (path, a), s in zip(flat, jax.tree.leaves(scores))]
    return jax.tree_util.tree_unflatten(treedef, [jax.device_put(leaf) for leaf in out])


def follows(mask, n: int, m: int, prunable: masks_lib.Predicate) -> bool:
    """Whether every group of `m` of every prunable leaf keeps at most `n`."""
    return all(_grouped(np.asarray(leaf), m).sum(-1).max(initial=0) <= n
               for leaf in masks_lib.prunable_leaves(mask, prunable).values())
