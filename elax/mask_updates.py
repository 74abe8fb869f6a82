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
"""

import dataclasses
from typing import Callable

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
