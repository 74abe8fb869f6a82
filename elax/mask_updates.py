"""Masks that change during training (dynamic sparse training): a registered mask update that the train loop
calls every `config.mask_update.every` steps.

A mask update is a pure, jit-compatible function

    update(params, mask, grads, step, key, ctx) -> mask

of the current params and mask, the dense gradients of the loss on the batch of `step` (pruned weights included),
the global step (a traced int32), a PRNG key derived from (seed, step), and `ctx` (`UpdateContext`: static facts
of the run). It is called after step `step - 1` has trained, whenever `step` is a multiple of `every` before the
end of training; weights it turns on start at zero with zero optimizer state, weights it turns off are zeroed
with their optimizer state (`elax.train.Trainer.update_mask`). Static masks (IMP, ETT, the baselines) have no
update ("none"), and their train step has no trace of one.

A method of your own is one function and one `register` call:
    MASK_UPDATES.register("my_method", my_update)
Built in: "set" and "rigl" (their settings: `UpdateContext.settings` "drop_fraction" and "end_fraction"). As
the `set` and `rigl` baselines they take every setting from `config.baseline.dst_*`; as `config.mask_update.method`
of any other run (every level of an IMP run moving its mask), their interval is `mask_update.every` and the
fractions keep RigL's defaults (0.3, 0.75).
"""

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from elax.masks import Predicate
from elax.registry import Registry

MaskUpdateFn = Callable   # (params, mask, grads, step, key, ctx) -> mask


@dataclasses.dataclass(frozen=True)
class UpdateContext:
    """What a mask update may know besides the trees, fixed for a run."""

    prunable: Predicate       # which leaves are prunable (the rest stay all-True)
    every: int                # steps between two updates
    total_steps: int          # the step at which training ends
    settings: tuple = ()      # (key, value) pairs of config.mask_update, for a method's own hyperparameters

    def setting(self, key: str, default=None):
        return dict(self.settings).get(key, default)


@dataclasses.dataclass(frozen=True)
class MaskUpdate:
    """A registered update bound to its run's context: what `elax.train.Trainer` calls."""

    fn: MaskUpdateFn
    ctx: UpdateContext

    def steps(self, start: int, end: int) -> range:
        """The steps in (start, end) before which the mask is updated."""
        first = (start // self.ctx.every + 1) * self.ctx.every
        return range(first, end, self.ctx.every)


MASK_UPDATES: Registry[MaskUpdateFn | None] = Registry("mask update")
MASK_UPDATES.register("none", None)


def bind(method: str, ctx: UpdateContext) -> MaskUpdate | None:
    """The update registered as `method` bound to `ctx`; None for static masks ("none")."""
    fn = MASK_UPDATES.get(method)
    return None if fn is None else MaskUpdate(fn, ctx)


# -- dynamic sparse training: drop the smallest kept weights, grow as many elsewhere -------------------------------

def _rank(scores):
    """The rank of every entry of a flat array (0 = smallest), ties by position."""
    return jnp.argsort(jnp.argsort(scores, stable=True), stable=True)


def drop_fraction(step, ctx: UpdateContext):
    """The fraction of a layer's kept weights that an update at `step` replaces: `drop_fraction` decayed by a
    cosine to 0 at `end_fraction` of training, and 0 from there on (RigL's schedule)."""
    end = ctx.setting("end_fraction", 0.75) * ctx.total_steps
    decayed = 0.5 * ctx.setting("drop_fraction", 0.3) * (1.0 + jnp.cos(jnp.pi * jnp.minimum(step / end, 1.0)))
    return jnp.where(step < end, decayed, 0.0)


def drop_and_grow(params, mask, grow_scores, step, ctx: UpdateContext):
    """In every prunable layer: drop the floor(fraction x kept) kept weights of smallest magnitude and grow as many
    of the weights pruned before this update with the highest `grow_scores` (ties by position). A layer keeps
    its count; a weight dropped now is not grown back in the same update."""
    fraction = drop_fraction(step, ctx)
    flat, treedef = jax.tree_util.tree_flatten_with_path(mask)
    out = []
    for (path, m), p, g in zip(flat, jax.tree.leaves(params), jax.tree.leaves(grow_scores)):
        if not ctx.prunable(path, m):
            out.append(m)
            continue
        kept, p, g = m.ravel(), p.ravel(), g.ravel()
        n = jnp.minimum(jnp.floor(fraction * kept.sum()).astype(jnp.int32), (~kept).sum())
        drop = _rank(jnp.where(kept, jnp.abs(p), jnp.inf)) < n
        grow = _rank(jnp.where(kept, jnp.inf, -g)) < n
        out.append(((kept & ~drop) | grow).reshape(m.shape))
    return jax.tree_util.tree_unflatten(treedef, out)


def set_update(params, mask, grads, step, key, ctx: UpdateContext):
    """SET (Mocanu et al. 2018): drop the smallest magnitudes, grow at random."""
    leaves = jax.tree.leaves(mask)
    keys = jax.random.split(key, len(leaves))
    scores = jax.tree.unflatten(jax.tree.structure(mask),
                                [jax.random.uniform(k, m.shape) for k, m in zip(keys, leaves)])
    return drop_and_grow(params, mask, scores, step, ctx)


def rigl_update(params, mask, grads, step, key, ctx: UpdateContext):
    """RigL (Evci et al. 2020): drop the smallest magnitudes, grow the largest dense-gradient magnitudes."""
    return drop_and_grow(params, mask, jax.tree.map(jnp.abs, grads), step, ctx)


MASK_UPDATES.register("set", set_update)
MASK_UPDATES.register("rigl", rigl_update)
