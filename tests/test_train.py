"""Tests for elax.train: LR schedule, torch-SGD optimizer, masked steps, data order, evaluation, 8 devices."""

import functools
import json
import math
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from elax import data as data_lib
from elax import masks, optim, pruning, train
from elax.models import get_model, init_variables
from conftest import TINY_SHAPE, plain_training
import toy_family  # noqa: F401  (registers the "toy" family)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS_PER_EPOCH = 10   # 80 synthetic training images / batch 8
MOMENTUM, WEIGHT_DECAY = 0.9, 5e-3


# -- helpers ----------------------------------------------------------------------------------------------------

def on_mesh(tree, mesh):
    """A fresh replicated copy: Trainer donates its state, and a committed input matches its output sharding."""
    return jax.device_put(jax.tree.map(lambda x: np.array(x, copy=True), tree), NamedSharding(mesh, P()))


def leaves_equal(a, b) -> bool:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


def np_flat(tree):
    return {masks.path_str(p): np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def run(trainer, state, data, chunks):
    totals = []
    for n in chunks:
        state, metrics = trainer.train_steps(state, data, n)
        totals.append(jax.device_get(metrics))
    return state, totals


# -- fixtures (module scope: every Trainer compiles its own train loop) ----------------------------------------

# The Trainer's mechanics (masks, momentum, data order, fused loop, evaluation) do not depend on the model: a toy
# model of dense layers with BatchNorm (tests/toy_family.py) compiles its train step in a fraction of a ResNet's;
# the IMP runs of the other tests train ResNets.
MODEL = "toy_1-1_w16-16"


@pytest.fixture(scope="module")
def env(tiny_dataset, eight_devices_proc):
    # eight_devices_proc: started here so that the subprocess runs alongside this module's compiles.
    mesh = train.make_mesh(jax.devices()[:1])
    return dict(model=get_model(MODEL), mesh=mesh,
                tx=optim.sgd(MOMENTUM, WEIGHT_DECAY),
                schedule=optim.multistep(0.05, STEPS_PER_EPOCH, milestones=(2,)),
                data=data_lib.put_on_devices(tiny_dataset, mesh))


def make_trainer(env, seed, **kwargs):
    return train.Trainer(model=env["model"], tx=env["tx"], schedule=env["schedule"], mesh=env["mesh"], batch_size=8,
                         steps_per_epoch=STEPS_PER_EPOCH, seed=seed, augment=True, eval_batch_size=4, **kwargs)


@pytest.fixture(scope="module")
def trainer(env):
    return make_trainer(env, seed=0)


@pytest.fixture(scope="module")
def variables(env):
    return init_variables(env["model"], jax.random.key(0), TINY_SHAPE)


@pytest.fixture(scope="module")
def ticket(variables):
    """(params, batch_stats, mask) with 60% of the prunable weights pruned by magnitude."""
    params = variables["params"]
    mask = pruning.prune_magnitude(params, masks.build(params), 0.6)
    return params, variables["batch_stats"], mask


# -- schedule and optimizer -------------------------------------------------------------------------------------

def test_multistep_schedule_milestones():
    s = optim.multistep(0.1, 10, milestones=(2, 3))
    for step, lr in [(0, 0.1), (1, 0.1), (19, 0.1), (20, 0.01), (29, 0.01), (30, 0.001), (1000, 0.001)]:
        assert float(s(step)) == pytest.approx(lr, rel=1e-6), step
    s = optim.multistep(0.1, 391, milestones=(80, 120))   # the CIFAR recipe, per iteration
    for step, lr in [(31279, 0.1), (31280, 0.01), (46919, 0.01), (46920, 0.001), (62559, 0.001)]:
        assert float(s(step)) == pytest.approx(lr, rel=1e-6), step
    s = optim.multistep(1.0, 4, milestones=(0.5, 1.25), gamma=0.5)   # fractional epochs: steps 2 and 5
    assert [float(s(t)) for t in range(7)] == [1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25]
    assert [float(optim.multistep(0.3, 5)(t)) for t in (0, 7, 10**6)] == pytest.approx([0.3] * 3)


def test_multistep_schedule_warmup_is_linear_from_zero():
    s = optim.multistep(0.4, 10, warmup_epochs=1)
    for step in range(10):
        assert float(s(step)) == pytest.approx(0.4 * step / 10, abs=1e-7), step
    assert float(s(10)) == pytest.approx(0.4) and float(s(500)) == pytest.approx(0.4)


def test_multistep_schedule_milestones_are_absolute_epochs_with_warmup():
    # ImageNet recipe (ELTH.md section 2): x0.1 at epochs 30/60/80 *and* a 5-epoch warmup. The milestones are
    # epochs of the run (OpenLTH: gamma ** bisect(milestones, it) times min(1, it / warmup)), not epochs after
    # the warmup.
    s = optim.multistep(0.4, 10, milestones=(30, 60, 80), warmup_epochs=5)
    for step, lr in [(25, 0.2), (50, 0.4), (299, 0.4), (300, 0.04), (349, 0.04), (350, 0.04), (599, 0.04),
                     (600, 0.004), (800, 0.0004)]:
        assert float(s(step)) == pytest.approx(lr, rel=1e-5), step


def test_optimizer_is_torch_sgd_with_coupled_weight_decay():
    lr, m, wd = 0.1, 0.9, 0.01
    rng = np.random.default_rng(0)
    p0 = {"w": rng.standard_normal((3, 2)).astype(np.float32), "b": rng.standard_normal(2).astype(np.float32)}
    g1 = jax.tree.map(lambda x: rng.standard_normal(x.shape).astype(np.float32), p0)
    g2 = jax.tree.map(lambda x: rng.standard_normal(x.shape).astype(np.float32), p0)
    tx = optim.sgd(m, wd)
    opt = tx.init(p0)
    d1, opt = tx.update(g1, opt, p0)
    p1 = jax.tree.map(lambda p, d: p - lr * d, p0, d1)
    d2, opt = tx.update(g2, opt, p1)
    p2 = jax.tree.map(lambda p, d: p - lr * d, p1, d2)
    for k in p0:
        # torch.optim.SGD: d = g + wd * p; buf = d (first step), then buf = m * buf + d; p -= lr * buf.
        buf1 = g1[k] + wd * p0[k]
        hp1 = p0[k] - lr * buf1
        buf2 = m * buf1 + (g2[k] + wd * hp1)
        hp2 = hp1 - lr * buf2
        np.testing.assert_allclose(p1[k], hp1, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(p2[k], hp2, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(opt[1].trace[k], buf2, rtol=1e-6, atol=1e-7)


def linear_apply(variables, images, train=True, mutable=()):
    """A model without a module: logits = flatten(x) @ W + b; 'batch_stats' counts calls."""
    p = variables["params"]["dense"]
    logits = images.reshape(images.shape[0], -1) @ p["kernel"] + p["bias"]
    return logits, {"batch_stats": {"calls": variables["batch_stats"]["calls"] + 1}}


def test_train_step_matches_hand_computation():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 2, 2, 1)).astype(np.float32)     # 4 features
    y = np.array([0, 1, 2, 2, 1, 0], np.int32)
    params = {"dense": {"kernel": rng.standard_normal((4, 3)).astype(np.float32),
                        "bias": rng.standard_normal(3).astype(np.float32)}}
    kmask = np.ones((4, 3), bool)
    kmask[[0, 2, 3], [1, 0, 2]] = False
    mask = {"dense": {"kernel": jnp.asarray(kmask), "bias": jnp.ones(3, bool)}}
    lr_at = lambda step: 0.1 * (step + 1)       # the LR must be read at the step *before* the update
    tx = optim.sgd(MOMENTUM, 0.05)
    state = train.create_state(params, {"calls": jnp.zeros((), jnp.int32)}, mask, tx, step=0)
    np.testing.assert_array_equal(state.params["dense"]["kernel"], np.where(kmask, params["dense"]["kernel"], 0))

    W, b = np.where(kmask, params["dense"]["kernel"], 0).astype(np.float64), params["dense"]["bias"].astype(np.float64)
    buf_W, buf_b = np.zeros_like(W), np.zeros_like(b)
    X, onehot = x.reshape(6, -1).astype(np.float64), np.eye(3)[y]
    # Jitted, as Trainer runs it (eagerly, each of its operations would compile a program of its own).
    step = jax.jit(functools.partial(train.train_step, apply_fn=linear_apply, tx=tx, schedule=lr_at))
    for t in range(2):
        state, metrics = step(state, x, y)
        logits = X @ W + b
        probs = np.exp(logits - logits.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        loss = -np.log(probs[np.arange(6), y]).mean()
        gW, gb = np.where(kmask, X.T @ (probs - onehot) / 6, 0.0), (probs - onehot).mean(0)   # pruned: no gradient
        buf_W = MOMENTUM * buf_W + gW + 0.05 * W
        buf_b = MOMENTUM * buf_b + gb + 0.05 * b
        W, b = np.where(kmask, W - lr_at(t) * buf_W, 0.0), b - lr_at(t) * buf_b
        np.testing.assert_allclose(state.params["dense"]["kernel"], W, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(state.params["dense"]["bias"], b, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(np.asarray(state.params["dense"]["kernel"])[~kmask], 0.0)
        np.testing.assert_allclose(state.opt_state[1].trace["dense"]["kernel"], buf_W, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(np.asarray(state.opt_state[1].trace["dense"]["kernel"])[~kmask], 0.0)
        assert float(metrics["loss"]) == pytest.approx(6 * loss, rel=1e-5)
        assert float(metrics["correct"]) == np.sum(logits.argmax(1) == y)
        assert float(metrics["count"]) == 6
        assert int(state.step) == t + 1 and int(state.batch_stats["calls"]) == t + 1


# -- Trainer ----------------------------------------------------------------------------------------------------

def test_create_state_masks_params(env, ticket):
    params, batch_stats, mask = ticket
    state = train.create_state(params, batch_stats, mask, env["tx"], step=7)
    assert int(state.step) == 7 and state.step.dtype == jnp.int32
    for p, s, m in zip(jax.tree.leaves(params), jax.tree.leaves(state.params), jax.tree.leaves(mask)):
        np.testing.assert_array_equal(s, np.where(m, p, 0.0))
    kernels = 3 * 16 + 16 * 16 + 16 * 10   # the prunable weights: two blocks' and the head's
    assert masks.count(mask) == (kernels - math.ceil(0.6 * kernels), kernels)
    assert leaves_equal(state.mask, mask) and leaves_equal(state.batch_stats, batch_stats)
    assert all(not np.any(np.asarray(t)) for t in jax.tree.leaves(state.opt_state))   # fresh momentum


def test_put_on_devices_and_mesh(env, tiny_dataset):
    data, mesh = env["data"], env["mesh"]
    assert mesh.axis_names == ("data",) and mesh.size == 1
    assert train.make_mesh().size == jax.device_count()
    assert data.train_images.dtype == jnp.uint8 and data.train_labels.dtype == jnp.int32
    np.testing.assert_array_equal(data.test_images, tiny_dataset.test_images)
    assert data.num_train == 80 and data.image_shape == (8, 8, 3)
    assert data.mean == tiny_dataset.mean and data.std == tiny_dataset.std


def test_pruned_weights_stay_zero_for_30_steps(env, trainer, ticket):
    params, batch_stats, mask = ticket
    start = train.create_state(params, batch_stats, mask, env["tx"])
    state, metrics = run(trainer, on_mesh(start, env["mesh"]), env["data"], [10, 10, 10])
    assert int(state.step) == 30 and sum(m["count"] for m in metrics) == 240
    assert leaves_equal(state.mask, mask)
    p, m0, p0 = np_flat(state.params), np_flat(mask), np_flat(start.params)
    trace = np_flat(state.opt_state[1].trace)
    for name in p:
        assert np.all(p[name][~m0[name]] == 0.0), name
        assert np.all(np.isfinite(p[name])), name
    kernels = [k for k in p if k.endswith("kernel")]
    # Pruned weights have no momentum (their gradients never reach the optimizer); the kept weights trained.
    assert all(np.all(trace[k][~m0[k]] == 0) and np.any(trace[k][m0[k]] != 0) for k in kernels)
    assert all(np.any(p[k][m0[k]] != p0[k][m0[k]]) for k in kernels)


def test_pruned_after_momentum_built_up_stays_zero(env, trainer, variables):
    params, batch_stats = variables["params"], variables["batch_stats"]
    dense = masks.build(params)
    state, _ = run(trainer, on_mesh(train.create_state(params, batch_stats, dense, env["tx"]), env["mesh"]),
                   env["data"], [10, 5])
    new_mask = pruning.prune_magnitude(state.params, dense, 0.5)
    # Adversarial: the mask changes under a live state (weights and momentum nonzero at the pruned positions).
    adversarial = on_mesh(state.replace(mask=new_mask), env["mesh"])
    p, m, trace = np_flat(adversarial.params), np_flat(new_mask), np_flat(adversarial.opt_state[1].trace)
    kernels = [k for k in p if k.endswith("kernel")]
    assert all(np.all(p[k][~m[k]] != 0) and np.any(trace[k][~m[k]] != 0) for k in kernels)
    state, _ = run(trainer, adversarial, env["data"], [5, 10, 10])
    assert int(state.step) == 40
    p = np_flat(state.params)
    for name in p:
        assert np.all(p[name][~m[name]] == 0.0), name
    assert sum(int(np.sum(p[k] != 0)) for k in kernels) == masks.count(new_mask)[0]


def test_data_order_is_a_function_of_seed_and_step(env, trainer, ticket):
    params, batch_stats, mask = ticket
    start = train.create_state(params, batch_stats, mask, env["tx"])
    one, m_one = run(trainer, on_mesh(start, env["mesh"]), env["data"], [10])
    two, m_two = run(trainer, on_mesh(start, env["mesh"]), env["data"], [5, 5])
    assert leaves_equal(one, two)                                        # 2 x 5 steps == 1 x 10 steps
    assert m_one[0]["count"] == m_two[0]["count"] + m_two[1]["count"] == 80
    assert m_one[0]["correct"] == m_two[0]["correct"] + m_two[1]["correct"]
    np.testing.assert_allclose(m_one[0]["loss"], m_two[0]["loss"] + m_two[1]["loss"], rtol=1e-6)

    other = make_trainer(env, seed=0)                                    # a second Trainer, same seed
    a, _ = run(trainer, on_mesh(start, env["mesh"]), env["data"], [10, 4])   # crosses into epoch 1
    b, _ = run(other, on_mesh(start, env["mesh"]), env["data"], [10, 4])
    assert leaves_equal(a, b)
    assert int(a.step) == 14
    # Same state at another step (another epoch): another batch order, so another result.
    c, _ = run(trainer, on_mesh(start.replace(step=jnp.asarray(10, jnp.int32)), env["mesh"]), env["data"], [4])
    assert not leaves_equal(a.params, c.params)


def test_batch_of_a_step_is_the_batch_training_reads(tiny_dataset):
    """`Trainer.batch` (SNIP/GraSP score batches) gives exactly the batch the train step at that step uses. The
    batch is checked, not the model: a plain MLP's step compiles in a fraction of a ResNet's."""
    trainer, state, data = plain_training(tiny_dataset, optim.sgd(MOMENTUM, WEIGHT_DECAY), fraction=0.5, augment=True)
    start = state.replace(step=jnp.asarray(13, jnp.int32))   # mid-epoch 1
    trained, _ = run(trainer, on_mesh(start, trainer.mesh), data, [1])
    images, labels = trainer.batch(data, 13)
    assert images.shape == (8, *TINY_SHAPE) and images.dtype == jnp.float32 and labels.shape == (8,)
    by_hand, _ = jax.jit(functools.partial(train.train_step, apply_fn=trainer.model.apply, tx=trainer.tx,
                                           schedule=trainer.schedule))(start, images, labels)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), trained.params,
                 by_hand.params)
    other_images, _ = trainer.batch(data, 14)
    assert not np.array_equal(images, other_images)


@pytest.fixture(scope="module")
def seed1_run(env, ticket):
    """A seed-1 Trainer fed exactly as elax.runs feeds it: create_state's output, then its own output."""
    params, batch_stats, mask = jax.tree.map(jnp.array, ticket)    # private copies of the ticket
    trainer1 = make_trainer(env, seed=1)
    state, _ = trainer1.train_steps(train.create_state(params, batch_stats, mask, env["tx"]), env["data"], 4)
    deleted = [masks.path_str(p) for p, x in jax.tree_util.tree_flatten_with_path((mask, batch_stats))[0]
               if x.is_deleted()]
    state, _ = trainer1.train_steps(state, env["data"], 4)
    return dict(trainer=trainer1, state=jax.device_get(state), deleted=deleted)


def test_seed_changes_data_order(env, trainer, ticket, seed1_run):
    params, batch_stats, mask = ticket
    seed0, _ = run(trainer, on_mesh(train.create_state(params, batch_stats, mask, env["tx"]), env["mesh"]),
                   env["data"], [4, 4])
    assert int(seed0.step) == int(seed1_run["state"].step) == 8
    assert not leaves_equal(seed0.params, seed1_run["state"].params)


def test_train_loop_compiles_once_per_trainer(seed1_run):
    # The first call gets create_state's (uncommitted) state, later calls the replicated output of the previous
    # call; both must hit one executable, or every IMP level pays for compiling the train step twice.
    # On CPU each step is its own jitted call (the fused loop is slow there, see Trainer.train_steps).
    assert jax.default_backend() == "cpu"
    assert seed1_run["trainer"]._one_step._cache_size() == 1
    assert seed1_run["trainer"]._run_steps._cache_size() == 0


def test_fused_loop_matches_step_by_step(env, ticket, seed1_run):
    """The accelerator path (all steps in one jitted fori_loop) computes the same training as the CPU path."""
    fused = make_trainer(env, seed=1, fused_loop=True)
    state = train.create_state(*jax.tree.map(jnp.array, ticket), env["tx"])
    state, _ = run(fused, state, env["data"], [4, 4])
    assert fused._run_steps._cache_size() == 1 and fused._one_step._cache_size() == 0
    assert int(state.step) == int(seed1_run["state"].step) == 8
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(seed1_run["state"].params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


def test_train_steps_keeps_callers_mask_and_batch_stats_alive(seed1_run):
    # create_state puts the caller's mask and batch_stats into the state as they are, and train_steps donates the
    # state: the caller's trees must not be deleted by training (a notebook reuses its mask and rewind stats).
    assert seed1_run["deleted"] == []


def test_evaluate_with_padding_matches_hand_computation(env, trainer, tiny_dataset, ticket):
    params, batch_stats, mask = ticket
    params = masks.apply(params, mask)
    x = data_lib.normalize(jnp.asarray(tiny_dataset.test_images), tiny_dataset.mean, tiny_dataset.std)
    logits = np.asarray(env["model"].apply({"params": params, "batch_stats": batch_stats}, x, train=False),
                        np.float64)
    preds = logits.argmax(1)
    assert len(preds) == 13 and 13 % trainer.eval_batch_size != 0
    labels = np.where(np.arange(13) < 5, preds, (preds + 1) % 10).astype(np.int32)   # exactly 5 correct
    data = env["data"].replace(test_labels=jax.device_put(labels, NamedSharding(env["mesh"], P())))
    metrics = trainer.evaluate(params, batch_stats, data)
    assert set(metrics) == {"loss", "accuracy"}
    assert metrics["accuracy"] == pytest.approx(5 / 13, abs=1e-6)
    log_probs = logits - logits.max(1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(1, keepdims=True))
    assert metrics["loss"] == pytest.approx(-log_probs[np.arange(13), labels].mean(), rel=1e-5)


# -- 8 forced CPU devices ---------------------------------------------------------------------------------------

EIGHT_DEVICES = textwrap.dedent("""
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P
    from elax import checkpoint, data as data_lib, masks, optim, pruning, train
    from elax.data import Dataset
    from elax.models import get_model

    assert jax.device_count() == 8, jax.devices()
    rng = np.random.default_rng(0)
    sys.path.insert(0, "tests")
    import toy_family   # dense layers with BatchNorm: batch statistics over the sharded batch, compiled in seconds
    model = get_model("toy_1-1_w16-16")
    shapes = jax.eval_shape(lambda k: model.init(k, jnp.zeros((1, 8, 8, 3)), train=False), jax.random.key(0))

    def fill(path, s):   # Kaiming-like values without compiling model.init (slow on CPU)
        name = masks.path_str(path)
        if name.endswith("kernel"):
            return rng.normal(0, np.sqrt(2 / np.prod(s.shape[:-1])), s.shape).astype(np.float32)
        if name.endswith("scale"):
            return rng.uniform(0, 1, s.shape).astype(np.float32)
        return np.full(s.shape, 1.0 if name.endswith("var") else 0.0, np.float32)

    variables = jax.tree_util.tree_map_with_path(fill, shapes)
    params, batch_stats = variables["params"], variables["batch_stats"]
    mask = pruning.prune_magnitude(params, masks.build(params), 0.5)
    images = lambda n: rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    labels = lambda n: rng.integers(0, 10, n).astype(np.int32)
    ds = Dataset("synthetic", images(64), labels(64), images(20), labels(20), 10, (0.5, 0.45, 0.4),
                 (0.29, 0.28, 0.3), "synthetic")
    tx = optim.sgd(0.9, 5e-3)
    out = {}
    for name, devices in (("one", jax.devices()[:1]), ("all", jax.devices())):
        mesh = train.make_mesh(devices)
        trainer = train.Trainer(model=model, tx=tx, schedule=optim.multistep(0.05, 4), mesh=mesh,
                                batch_size=16, steps_per_epoch=4, seed=0, augment=True, eval_batch_size=8)
        data = data_lib.put_on_devices(ds, mesh)
        state = train.create_state(params, batch_stats, mask, tx)   # host copies: train_steps donates its state
        state = jax.device_put(jax.tree.map(lambda x: np.array(x, copy=True), state), NamedSharding(mesh, P()))
        state, metrics = trainer.train_steps(state, data, 3)
        out[name] = dict(state=jax.device_get(state), metrics=jax.device_get(metrics),
                         eval=trainer.evaluate(state.params, state.batch_stats, data),
                         devices=len(state.params["head"]["kernel"].sharding.device_set))
    # Resume on 8 devices: a restored checkpoint must continue exactly like the live state.
    checkpoint.save_state(sys.argv[1], state)
    template = train.create_state(params, batch_stats, masks.build(params), tx)
    restored = checkpoint.restore_state(sys.argv[1], template)
    live, _ = trainer.train_steps(state, data, 1)
    try:
        resumed, _ = trainer.train_steps(restored, data, 1)
        resume = "ok" if all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(jax.device_get(live)),
                                                                   jax.tree.leaves(jax.device_get(resumed)))) else "differs"
    except Exception as e:
        resume = f"{type(e).__name__}: {e}"[:300]
    one, all_ = out["one"], out["all"]
    diff = lambda a, b: max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
                            for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    moved = diff(one["state"].params, jax.tree.map(np.asarray, masks.apply(params, mask)))
    pruned_nonzero = sum(int(np.sum((np.asarray(p) != 0) & ~np.asarray(m)))
                         for p, m in zip(jax.tree.leaves(all_["state"].params), jax.tree.leaves(mask)))
    try:
        train.Trainer(model=model, tx=tx, schedule=optim.multistep(0.05, 4), mesh=train.make_mesh(),
                      batch_size=12, steps_per_epoch=4, seed=0, augment=True, eval_batch_size=8)
        indivisible = "no error"
    except ValueError as e:
        indivisible = str(e)
    print("RESULT " + json.dumps(dict(
        devices=[one["devices"], all_["devices"]], moved=moved,
        params=diff(one["state"].params, all_["state"].params),
        batch_stats=diff(one["state"].batch_stats, all_["state"].batch_stats),
        opt_state=diff(one["state"].opt_state, all_["state"].opt_state),
        steps=[int(one["state"].step), int(all_["state"].step)],
        metrics=[one["metrics"]["loss"].item(), all_["metrics"]["loss"].item(),
                 one["metrics"]["correct"].item(), all_["metrics"]["correct"].item()],
        eval=[one["eval"], all_["eval"]], pruned_nonzero=pruned_nonzero, indivisible=indivisible, resume=resume)))
""")


def child_env(xla_flags: str) -> dict:
    """The environment of a CPU-only Python subprocess that imports this checkout's elax with `xla_flags`."""
    return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags,
                PYTHONPATH=os.pathsep.join([REPO] + [p for p in [os.environ.get("PYTHONPATH")] if p]))


@pytest.fixture(scope="module")
def eight_devices_proc(tmp_path_factory):
    """Starts EIGHT_DEVICES in a subprocess with 8 forced CPU devices (XLA_FLAGS must be set before jax starts)."""
    tmp = tmp_path_factory.mktemp("eight_devices")
    script = tmp / "eight_devices.py"
    script.write_text(EIGHT_DEVICES)
    env = child_env((os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip())
    proc = subprocess.Popen([sys.executable, str(script), str(tmp / "ckpt")], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


@pytest.fixture(scope="module")
def eight_devices(eight_devices_proc):
    """The subprocess's printed results."""
    stdout, stderr = eight_devices_proc.communicate(timeout=300)
    assert eight_devices_proc.returncode == 0, stderr[-3000:]
    line = [l for l in stdout.splitlines() if l.startswith("RESULT ")]
    assert len(line) == 1, stdout[-2000:]
    return json.loads(line[0][len("RESULT "):])


def test_eight_devices_match_one_device(eight_devices):
    r = eight_devices
    assert r["devices"] == [1, 8]
    assert r["steps"] == [3, 3]
    assert r["moved"] > 1e-3                  # training did change the params
    assert r["params"] < 1e-5, r
    assert r["batch_stats"] < 1e-5, r
    assert r["opt_state"] < 1e-4, r
    assert r["metrics"][0] == pytest.approx(r["metrics"][1], rel=1e-5) and r["metrics"][2] == r["metrics"][3]
    assert r["eval"][0]["accuracy"] == r["eval"][1]["accuracy"]
    assert r["eval"][0]["loss"] == pytest.approx(r["eval"][1]["loss"], rel=1e-5)
    assert r["pruned_nonzero"] == 0
    assert "divisible" in r["indivisible"] and "batch_size=12" in r["indivisible"]


def test_eight_devices_resume_from_checkpoint(eight_devices):
    # restore_state gives single-device arrays; a resumed run (elax.runs.train_ticket) must still train on the
    # 8-device mesh, bitwise like the live state.
    assert eight_devices["resume"] == "ok"


# The CPU opt-in of docs/performance.md and the README, for CIFAR-size ResNets (never on a GPU).
CPU_OPT_IN_XLA_FLAGS = ("--xla_disable_hlo_passes=fusion "
                        "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution")

LOGITS_AND_GRADS = textwrap.dedent("""
    import sys
    import jax, jax.numpy as jnp, numpy as np
    from elax import train
    from elax.models import get_model, variable_shapes
    model = get_model("cifar_resnet_8")   # full width, the smallest depth: compiling is the cost here
    rng = np.random.default_rng(0)

    def init(path, leaf):   # as the model's init draws (He-normal kernels, BN at 1 and 0), but by numpy: compiling
        name = path[-1].key  # the model's init cost each process ~5 s
        if name == "kernel":
            return rng.normal(0, np.sqrt(2 / np.prod(leaf.shape[:-1])), leaf.shape).astype(leaf.dtype)
        return np.full(leaf.shape, 1.0 if name in ("scale", "var") else 0.0, leaf.dtype)

    variables = jax.tree_util.tree_map_with_path(init, variable_shapes(model, (32, 32, 3)))
    images = jnp.asarray(rng.standard_normal((16, 32, 32, 3)), jnp.float32)
    labels = jnp.asarray(np.arange(16) % 10)

    def loss(params):
        logits, _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, images, train=True,
                                mutable=["batch_stats"])
        return train.cross_entropy(logits, labels), logits

    (_, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(variables["params"])
    np.savez(sys.argv[1], logits, *jax.tree.leaves(grads))
""")


def test_cpu_opt_in_xla_flags_change_rounding_only(tmp_path):
    # Each process reads XLA_FLAGS once, at start-up: one process per setting, run side by side.
    script = tmp_path / "logits_and_grads.py"
    script.write_text(LOGITS_AND_GRADS)
    runs = {}
    for name, flags in (("default", ""), ("opt_in", CPU_OPT_IN_XLA_FLAGS)):
        runs[name] = subprocess.Popen([sys.executable, str(script), str(tmp_path / f"{name}.npz")], cwd=REPO,
                                      env=child_env(flags), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True)
    for name, proc in runs.items():
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{name}: {stderr[-2000:]}"   # an unknown flag aborts XLA at start-up
    default, opt_in = (np.load(tmp_path / f"{name}.npz") for name in runs)
    assert default.files == opt_in.files and len(default.files) == 1 + 29   # logits + 29 parameter gradients
    for key in default.files:
        np.testing.assert_allclose(opt_in[key], default[key], rtol=0, atol=2e-5, err_msg=key)
