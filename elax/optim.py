"""Optimizers and learning-rate schedules, chosen by name (`config.train.optimizer`, `config.train.schedule`).

An optimizer here gives the *direction* of an update: an optax GradientTransformation without the learning rate.
The train step scales it by the schedule's LR at the run's global step, so that the fresh optimizer every level
starts with (at its rewind step) continues the schedule where level 0 was at that step, as OpenLTH does.

Registering an optimizer or a schedule is one function and one `register` call:
    OPTIMIZERS.register("lion", lambda t: optax.scale_by_lion(b1=t.adam_b1, b2=t.adam_b2))
where `t` is `config.train`; a schedule maker takes (t, steps_per_epoch) and returns step -> LR.
"""

import math
from typing import Callable

import jax.numpy as jnp
import optax

from elax.registry import Registry

OPTIMIZERS: Registry[Callable] = Registry("optimizer")   # name -> make(config.train) -> GradientTransformation
SCHEDULES: Registry[Callable] = Registry("schedule")     # name -> make(config.train, steps_per_epoch) -> schedule


def sgd(momentum: float, weight_decay: float) -> optax.GradientTransformation:
    """SGD's direction with coupled L2 (added to the gradient before momentum), as torch.optim.SGD."""
    return optax.chain(optax.add_decayed_weights(weight_decay), optax.trace(decay=momentum))


def adamw(weight_decay: float, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> optax.GradientTransformation:
    """AdamW's direction (Loshchilov & Hutter 2019): Adam's step plus the decoupled decay `weight_decay * w`, both
    scaled by the LR in the train step, as optax.adamw and torch.optim.AdamW."""
    return optax.chain(optax.scale_by_adam(b1=b1, b2=b2, eps=eps), optax.add_decayed_weights(weight_decay))


OPTIMIZERS.register("sgd", lambda t: sgd(t.momentum, t.weight_decay))
OPTIMIZERS.register("adamw", lambda t: adamw(t.weight_decay, t.adam_b1, t.adam_b2, t.adam_eps))


def _with_warmup(schedule: Callable, warmup_steps: int) -> Callable:
    """`schedule` scaled by a linear warmup from 0 over `warmup_steps`: the warmup scales, it does not shift."""
    if not warmup_steps:
        return schedule
    return lambda step: schedule(step) * jnp.minimum(1.0, step / warmup_steps)


def multistep(lr: float, steps_per_epoch: int, milestones=(), gamma: float = 0.1,
              warmup_epochs: float = 0.0) -> Callable:
    """Per-iteration LR: x`gamma` at each milestone epoch (absolute epochs, as in OpenLTH), after an optional
    linear warmup from 0."""
    boundaries = {int(round(m * steps_per_epoch)): gamma for m in milestones}
    decayed = optax.piecewise_constant_schedule(lr, boundaries)
    return _with_warmup(decayed, int(round(warmup_epochs * steps_per_epoch)))


def cosine(lr: float, steps_per_epoch: int, total_steps: int, warmup_epochs: float = 0.0,
           final_lr: float = 0.0) -> Callable:
    """Linear warmup from 0 to `lr` over `warmup_epochs`, then a half cosine from `lr` to `final_lr` at
    `total_steps` (optax.warmup_cosine_decay_schedule's shape)."""
    warmup = int(round(warmup_epochs * steps_per_epoch))
    span = max(total_steps - warmup, 1)

    def decay(step):
        progress = jnp.clip((step - warmup) / span, 0.0, 1.0)
        return final_lr + 0.5 * (lr - final_lr) * (1.0 + jnp.cos(math.pi * progress))

    return _with_warmup(decay, warmup)


SCHEDULES.register("multistep", lambda t, spe: multistep(t.lr, spe, tuple(t.milestones), t.gamma, t.warmup_epochs))
SCHEDULES.register("cosine", lambda t, spe: cosine(t.lr, spe, t.epochs * spe, t.warmup_epochs, t.final_lr))


def make_optimizer(train_config) -> optax.GradientTransformation:
    """The direction of `config.train.optimizer`."""
    return OPTIMIZERS.get(train_config.optimizer)(train_config)


def make_schedule(train_config, steps_per_epoch: int) -> Callable:
    """The per-iteration LR of `config.train.schedule`."""
    return SCHEDULES.get(train_config.schedule)(train_config, steps_per_epoch)
