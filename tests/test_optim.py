"""Optimizers and schedules chosen by config (elax.optim): AdamW's step against optax.adamw, the warmup + cosine
schedule against a hand formula, and masked training exact for every optimizer: pruned weights and their
optimizer state (momentum, Adam's moments) stay exactly 0."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from elax import config as config_lib, optim, runs
from conftest import plain_training

pytestmark = pytest.mark.smoke   # the first look: python -m pytest -m smoke


def test_cosine_schedule_warms_up_then_follows_half_a_cosine():
    s = optim.cosine(0.4, steps_per_epoch=10, total_steps=110, warmup_epochs=1, final_lr=0.04)
    assert [float(s(t)) for t in (0, 5, 10)] == pytest.approx([0.0, 0.2, 0.4])   # linear from 0 over 10 steps
    for t in (10, 35, 60, 85, 110, 200):
        progress = min((t - 10) / 100, 1.0)
        assert float(s(t)) == pytest.approx(0.04 + 0.5 * 0.36 * (1 + math.cos(math.pi * progress)), rel=1e-6)
    reference = optax.warmup_cosine_decay_schedule(0.0, 0.4, 10, 110, end_value=0.04)
    assert [float(s(t)) for t in range(0, 111, 7)] == pytest.approx([float(reference(t)) for t in range(0, 111, 7)],
                                                                    rel=1e-5, abs=1e-7)


def test_adamw_direction_times_the_lr_is_optax_adamw():
    params = {"w": jnp.asarray([[0.5, -1.0], [2.0, 0.25]]), "b": jnp.asarray([0.1, -0.3])}
    grads = [jax.tree.map(lambda p: jnp.sin(p * k), params) for k in (1.0, 2.0, 3.0)]
    direction, reference = optim.adamw(0.01, b1=0.8, b2=0.99, eps=1e-6), optax.adamw(0.3, 0.8, 0.99, 1e-6,
                                                                                      weight_decay=0.01)
    state, ref_state, p, q = direction.init(params), reference.init(params), params, params
    for g in grads:
        d, state = direction.update(g, state, p)
        p = jax.tree.map(lambda x, y: x - 0.3 * y, p, d)
        u, ref_state = reference.update(g, ref_state, q)
        q = optax.apply_updates(q, u)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), p, q)


def test_the_config_picks_the_optimizer_and_schedule():
    t = config_lib.default_config().train
    state = optim.make_optimizer(t).init({"w": jnp.zeros(2)})
    assert isinstance(state[1], optax.TraceState)                   # sgd: coupled L2, then momentum
    t.optimizer, t.schedule, t.warmup_epochs, t.epochs = "adamw", "cosine", 0.0, 2
    assert isinstance(optim.make_optimizer(t).init({"w": jnp.zeros(2)})[0], optax.ScaleByAdamState)
    assert float(optim.make_schedule(t, 5)(10)) == pytest.approx(0.0, abs=1e-9)   # cosine ends at final_lr 0
    t.optimizer = "adam"
    with pytest.raises(ValueError, match=r"unknown optimizer 'adam' \(did you mean 'adamw'\?\)"):
        optim.make_optimizer(t)


def test_an_unknown_optimizer_in_a_config_names_the_key():
    config = config_lib.default_config()
    config.train.schedule = "cosin"
    with pytest.raises(ValueError, match=r"config.train.schedule: unknown schedule 'cosin' \(did you mean "
                                         r"'cosine'\?\). Valid: multistep, cosine."):
        runs.check(config)


def _zero_where_pruned(tx, opt_state, pruned) -> list[bool]:
    """For every leaf of `opt_state` shaped like a param (momentum, Adam's moments): whether it is 0 where pruned."""
    zero = lambda s, off: bool(np.all(np.asarray(s)[np.asarray(off)] == 0))
    flags = optax.tree_utils.tree_map_params(tx, zero, opt_state, pruned, transform_non_params=lambda s, *_: None)
    return jax.tree.leaves(flags)


@pytest.mark.parametrize("tx, moments", [(optim.sgd(0.9, 5e-3), 1), (optim.adamw(0.05), 2)], ids=["sgd", "adamw"])
def test_pruned_weights_and_their_optimizer_state_stay_exactly_zero(tiny_dataset, tx, moments):
    trainer, start, data = plain_training(tiny_dataset, tx, fraction=0.7, schedule=optim.cosine(0.05, 10, 20, 0.5),
                                          label_smoothing=0.1)
    start = jax.device_get(start)   # train_steps donates the state it is given
    mask = start.mask
    state, _ = trainer.train_steps(start, data, 10)
    pruned = jax.tree.map(jnp.logical_not, mask)
    flags = _zero_where_pruned(tx, state.opt_state, pruned)
    assert len(flags) == moments * len(jax.tree.leaves(mask)) and all(flags)
    for leaf, off in zip(jax.tree.leaves(state.params), jax.tree.leaves(pruned)):
        assert np.all(np.asarray(leaf)[np.asarray(off)] == 0)
    kept_moved = [np.any(np.asarray(p)[np.asarray(m)] != np.asarray(p0)[np.asarray(m)]) for p, m, p0 in zip(
        jax.tree.leaves(state.params), jax.tree.leaves(mask), jax.tree.leaves(start.params))]
    assert all(kept_moved)   # every leaf trained where it is kept
