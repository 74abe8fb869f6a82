"""Masks that change during training (elax.mask_updates): an update registered from the test runs through the
train loop, keeps every layer's count exact, starts regrown weights at zero with zero optimizer state, and the
no-op update trains bit for bit what a static mask trains."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from elax import checkpoint, mask_updates, masks, optim, runs, workdir as wd
import plain_family  # noqa: F401  (registers the "plain" family)
from conftest import plain_training, tiny_config


def _rank(scores):
    """The rank of every entry of a flat array (0 = smallest), ties by position."""
    return jnp.argsort(jnp.argsort(scores, stable=True), stable=True)


def drop_and_regrow(params, mask, grads, step, key, ctx):
    """SET (Mocanu et al. 2018) in a few lines: in every prunable layer, drop the 20% smallest kept weights by
    magnitude and regrow as many pruned ones at random (among those pruned before the drop)."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(mask)
    out = []
    for i, ((path, m), p) in enumerate(zip(flat, jax.tree.leaves(params))):
        if not ctx.prunable(path, m):
            out.append(m)
            continue
        m, p = m.ravel(), p.ravel()
        n = jnp.minimum(jnp.floor(0.2 * m.sum()).astype(jnp.int32), (~m).sum())
        drop = _rank(jnp.where(m, jnp.abs(p), jnp.inf)) < n
        grow = _rank(jnp.where(m, jnp.inf, -jax.random.uniform(jax.random.fold_in(key, i), m.shape))) < n
        out.append(((m & ~drop) | grow).reshape(flat[i][1].shape))
    return jax.tree_util.tree_unflatten(treedef, out)


def swap_first(params, mask, grads, step, key, ctx):
    """Turn off the first kept weight and on the first pruned one of every prunable leaf (by flat position)."""
    def swap(path, m):
        if not ctx.prunable(path, m):
            return m
        flat = m.ravel()
        return flat.at[jnp.argmax(flat)].set(False).at[jnp.argmax(~flat)].set(True).reshape(m.shape)
    return jax.tree_util.tree_map_with_path(swap, mask)


@pytest.fixture(scope="module", autouse=True)
def registered():
    for name, fn in (("test_set", drop_and_regrow), ("test_noop", lambda p, m, g, s, k, c: m)):
        mask_updates.MASK_UPDATES.register(name, fn)
    yield
    for name in ("test_set", "test_noop"):
        mask_updates.MASK_UPDATES.remove(name)


def test_an_update_zeroes_the_weights_and_optimizer_state_it_changes(tiny_dataset):
    prunable = plain_family.FAMILY.prunable
    update = mask_updates.MaskUpdate(swap_first, mask_updates.UpdateContext(prunable, every=5, total_steps=20))
    trainer, state, data = plain_training(tiny_dataset, optim.adamw(0.01), fraction=0.5, prunable=prunable,
                                          mask_update=update)
    before, _ = trainer.train_steps(state, data, 5)
    before = jax.device_get(before)
    after = jax.device_get(trainer.update_mask(before, data))
    assert int(after.step) == 5
    for name, leaf in masks.prunable_leaves(before.mask, prunable).items():
        old, new = np.asarray(leaf).ravel(), np.asarray(masks.prunable_leaves(after.mask, prunable)[name]).ravel()
        dropped, grown = int(np.argmax(old)), int(np.argmax(~old))
        assert np.array_equal(np.flatnonzero(old != new), sorted([dropped, grown])) and new.sum() == old.sum()
        p_old = np.asarray(masks.prunable_leaves(before.params, prunable)[name]).ravel()
        p_new = np.asarray(masks.prunable_leaves(after.params, prunable)[name]).ravel()
        assert p_old[dropped] != 0 and p_new[dropped] == 0 and p_new[grown] == 0   # regrown weights start at 0
        unchanged = np.ones(old.size, bool)
        unchanged[[dropped, grown]] = False
        assert np.array_equal(p_new[unchanged], p_old[unchanged])
        for moment in ("mu", "nu"):
            m_old = np.asarray(masks.prunable_leaves(getattr(before.opt_state[0], moment), prunable)[name]).ravel()
            m_new = np.asarray(masks.prunable_leaves(getattr(after.opt_state[0], moment), prunable)[name]).ravel()
            assert m_old[dropped] != 0 and m_new[dropped] == 0 and m_new[grown] == 0
            assert np.array_equal(m_new[unchanged], m_old[unchanged])


def _run(tmp_path, name, method, every=3):
    config = tiny_config(**{"model.name": "plain_1-1_w32-32", "lottery.levels": 1, "mask_update.method": method,
                            "mask_update.every": every})
    workdir = str(tmp_path / name)
    records = runs.run_imp(config, workdir, log=lambda _: None)
    ctx = runs.setup(config)
    final = checkpoint.restore_state(wd.checkpoints_dir(workdir, 1), ctx.template_state)
    return records, final, runs.load_ticket(workdir, 1), ctx


def test_a_registered_update_runs_through_the_loop_with_exact_counts(tmp_path):
    records, final, ticket, ctx = _run(tmp_path, "set", "test_set")
    assert int(final.step) == ctx.total_steps == 24
    assert [u for u in ctx.trainer.mask_update.steps(ctx.rewind_step, ctx.total_steps)] == [6, 9, 12, 15, 18, 21]
    start = {r.name: r.kept for r in masks.layer_report(ticket.mask, ctx.prunable)}
    end = {r.name: r.kept for r in masks.layer_report(final.mask, ctx.prunable)}
    assert end == start                               # every update kept each layer's count
    assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(final.mask), jax.tree.leaves(ticket.mask)))
    for p, m in zip(jax.tree.leaves(final.params), jax.tree.leaves(final.mask)):
        assert np.all(np.asarray(p)[~np.asarray(m)] == 0)
    assert records[1]["kept_weights"] == sum(start.values())
    assert wd.recipe(wd.read_json(os.path.join(tmp_path, "set", wd.CONFIG_FILE)))["mask_update.method"] == "test_set"


def test_the_no_op_update_trains_what_a_static_mask_trains(tmp_path):
    static, static_state, _, _ = _run(tmp_path, "static", "none")
    noop, noop_state, _, ctx = _run(tmp_path, "noop", "test_noop", every=2)
    assert ctx.trainer.mask_update is not None
    for a, b in zip(jax.tree.leaves(static_state), jax.tree.leaves(noop_state)):
        np.testing.assert_array_equal(a, b)            # bit for bit: params, optimizer state, mask, step
    strip = lambda records: [{k: v for k, v in r.items() if k != "recipe_id"} for r in records]
    assert strip(static) == strip(noop)
