"""Mask trees: a bool leaf for every param leaf, True = weight kept.

Leaves that are never pruned (biases, BatchNorm scale/bias, excluded layers) are all-True, so a mask always has
exactly the structure and shapes of the params it belongs to. Which leaves are prunable is a predicate
`prunable(path, leaf) -> bool` over key paths, so the same rule works on params, masks and score trees.
"""

import dataclasses
import functools
import math
from typing import Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np

Predicate = Callable[[tuple, object], bool]


def path_str(path) -> str:
    """'stage1_block0/conv1/kernel' for a jax key path."""
    return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def shape_mismatch(tree, expected) -> str | None:
    """A description of the first leaf whose presence or shape in `tree` differs from `expected` (trees of arrays
    or ShapeDtypeStructs), else None."""
    shapes, expected = _leaf_shapes(tree), _leaf_shapes(expected)
    for path, shape in expected.items():
        if path not in shapes:
            return f"it lacks the leaf {path!r}"
        if shapes[path] != shape:
            return f"leaf {path!r} has shape {shapes[path]}, the target expects {shape}"
    extra = [path for path in shapes if path not in expected]
    return f"its leaf {extra[0]!r} has no place in the target" if extra else None


def _leaf_shapes(tree) -> dict:
    return {path_str(path): np.shape(leaf) for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def prunable_kernels(exclude: Iterable[str] = ()) -> Predicate:
    """Conv and dense kernels (ndim >= 2), except those under a path in `exclude` ("head", "stage1_block0/conv1").

    ResNets prune every kernel (ELTH.md section 1); VGG and MLPs use `exclude=("head",)`. One predicate object per
    `exclude`, so that the jitted programs and caches keyed by it are shared.
    """
    return _prunable_kernels(tuple(exclude))


@functools.lru_cache(maxsize=None)
def _prunable_kernels(exclude: tuple[str, ...]) -> Predicate:

    def predicate(path, leaf) -> bool:
        name = path_str(path)
        return name.endswith("kernel") and np.ndim(leaf) >= 2 and not any(under(name, p) for p in exclude)

    return predicate


def under(path: str, prefix: str) -> bool:
    """Whether the leaf at `path` ('stage1_block0/conv1/kernel') is `prefix` or lies under it."""
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")


default_prunable = prunable_kernels()


# Whole trees in one jitted call: eager per-leaf ops would compile one tiny program per leaf shape.
@jax.jit
def _where_kept(params, mask):
    return jax.tree.map(lambda p, m: jnp.where(m, p, jnp.zeros_like(p)), params, mask)


def build(params):
    """The all-True mask of `params` (a dense ticket), made on the host: nothing to compile. `params` may hold
    arrays or jax.ShapeDtypeStructs."""
    return jax.device_put(jax.tree.map(lambda p: np.ones(np.shape(p), bool), params))


def apply(params, mask):
    """params with pruned weights set to exactly zero."""
    validate(mask, params)
    return _where_kept(params, mask)


def prunable_leaves(tree, prunable: Predicate = default_prunable) -> dict:
    """{path string: leaf} for the prunable leaves of `tree`, in tree order."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {path_str(path): leaf for path, leaf in flat if prunable(path, leaf)}


@dataclasses.dataclass(frozen=True)
class LayerDensity:
    name: str
    total: int
    kept: int

    @property
    def density(self) -> float:
        return self.kept / self.total


def layer_report(mask, prunable: Predicate = default_prunable) -> list[LayerDensity]:
    """Kept/total weights of every prunable leaf."""
    leaves = {name: np.asarray(m) for name, m in prunable_leaves(mask, prunable).items()}
    for name, m in leaves.items():
        if m.dtype != np.bool_:
            raise ValueError(f"Expected a mask (a tree of bool arrays), but {name!r} holds {m.dtype}. Pass the "
                             "mask (e.g. ticket.mask), not the params.")
    return [LayerDensity(name, m.size, int(m.sum())) for name, m in leaves.items()]


def count(mask, prunable: Predicate = default_prunable) -> tuple[int, int]:
    """(kept, total) prunable weights."""
    layers = layer_report(mask, prunable)
    return sum(l.kept for l in layers), sum(l.total for l in layers)


def sparsity(mask, prunable: Predicate = default_prunable) -> float:
    """Pruned fraction of the prunable weights."""
    kept, total = count(mask, prunable)
    return 1.0 - kept / total


def format_report(mask, prunable: Predicate = default_prunable) -> str:
    """A readable per-layer density table."""
    layers = layer_report(mask, prunable)
    if not layers:
        raise ValueError(f"format_report takes a mask tree with prunable layers (e.g. ticket.mask), got "
                         f"{type(mask).__name__} {mask!r:.60}.")
    width = max(len(l.name) for l in layers)
    lines = [f"{'layer':<{width}}  {'kept':>9}  {'total':>9}  density"]
    lines += [f"{l.name:<{width}}  {l.kept:>9}  {l.total:>9}  {l.density:7.2%}" for l in layers]
    kept, total = count(mask, prunable)
    lines.append(f"{'all prunable':<{width}}  {kept:>9}  {total:>9}  {kept / total:7.2%}")
    return "\n".join(lines)


def validate(mask, params) -> None:
    """Raise ValueError naming the first leaf whose path, shape or dtype makes `mask` unfit for `params`."""
    mask_flat = {path_str(p): m for p, m in jax.tree_util.tree_flatten_with_path(mask)[0]}
    param_flat = {path_str(p): x for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}
    for name, p in param_flat.items():
        if name not in mask_flat:
            raise ValueError(
                f"Mask does not fit the params: the mask has no leaf {name!r}. "
                "Was the mask built for another model? Rebuild it with elax.masks.build(params)."
            )
        m = mask_flat[name]
        if np.shape(m) != np.shape(p):
            raise ValueError(
                f"Mask does not fit the params at {name!r}: mask shape {np.shape(m)} != param shape "
                f"{np.shape(p)}. Was the mask built for another model or width?"
            )
        if getattr(m, "dtype", None) != np.dtype(bool):
            raise ValueError(f"Mask leaf {name!r} has dtype {getattr(m, 'dtype', type(m))}; masks are bool.")
    extra = [name for name in mask_flat if name not in param_flat]
    if extra:
        raise ValueError(
            f"Mask does not fit the params: the mask has a leaf {extra[0]!r} that the params lack. "
            "Was the mask built for another model?"
        )


def expected_sparsity(levels: int, prune_fraction: float = 0.2) -> float:
    """Sparsity after `levels` IMP levels that each prune `prune_fraction` of the remaining weights."""
    return 1.0 - (1.0 - prune_fraction) ** levels


def check_fraction(prune_fraction: float) -> None:
    if not (0.0 < prune_fraction < 1.0) or math.isnan(prune_fraction):
        raise ValueError(
            f"prune_fraction must be in (0, 1) (the fraction of remaining weights pruned per level), "
            f"got {prune_fraction}."
        )
