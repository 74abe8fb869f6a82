"""Masked training: state, jitted train/eval steps (optimizer and LR schedule from `elax.optim`), data parallel
over all devices.

The training loop is a pure function of (state, global step): the batch order of epoch e is a permutation seeded
by (seed, e) and the augmentation of step t is seeded by (seed, t). So a run restored from a checkpoint continues
exactly as if it had never stopped, and IMP levels that restart at the rewind step see the same data order.

Data parallelism: one `jax.jit` program over a 1-D mesh ('data'): the batch is sharded, the state replicated.
BatchNorm statistics are computed over the global batch, so any device count gives the same step.
"""

import dataclasses
import functools
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from elax import masks
from elax.data.augment import normalize
from elax.data.device import BatchSpec, DeviceSource
from elax.data.stream import StreamSource
from elax.mask_updates import MaskUpdate


@flax.struct.dataclass
class TrainState:
    step: jax.Array          # global step (iterations since the start of the schedule)
    params: Any
    batch_stats: Any
    opt_state: Any
    mask: Any


def create_state(params, batch_stats, mask, tx, step: int = 0) -> TrainState:
    """A state with a fresh optimizer, params masked so training starts from the ticket."""
    params = masks.apply(params, mask)
    # Own copies: trees from `transfer.apply` share leaves between replicated blocks, and the train step
    # donates its input buffers. device_put copies without compiling (jnp.array compiles a copy per leaf shape).
    batch_stats, mask = jax.tree.map(lambda leaf: jax.device_put(leaf, may_alias=False), (batch_stats, mask))
    return TrainState(step=jnp.asarray(step, jnp.int32), params=params, batch_stats=batch_stats,
                      opt_state=jax.jit(tx.init)(params), mask=mask)  # one program, not one per leaf


def cross_entropy(logits, labels, label_smoothing: float = 0.0):
    """Mean cross-entropy against integer labels, smoothed towards the uniform distribution by `label_smoothing`."""
    if not label_smoothing:
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
    return optax.softmax_cross_entropy(logits, targets).mean()


def _training_loss(apply_fn, label_smoothing: float, batch_stats, images, labels):
    """loss(params) -> (loss, (logits, updated batch_stats)) of a batch in training mode (BatchNorm on the batch's
    statistics; a model without BatchNorm has an empty batch_stats)."""

    def loss_fn(params):
        variables = {"params": params, "batch_stats": batch_stats}
        logits, updated = apply_fn(variables, images, train=True, mutable=["batch_stats"])
        return cross_entropy(logits, labels, label_smoothing), (logits, updated["batch_stats"])

    return loss_fn


def train_step(state: TrainState, images, labels, *, apply_fn, tx, schedule, masked: bool = True,
               label_smoothing: float = 0.0):
    """One optimizer step at the LR of `state.step`. Masked: the gradients of pruned weights are zeroed before
    the optimizer (so its state for them stays 0, whatever the optimizer) and params <- (params - lr * direction)
    * mask, so pruned weights stay exactly 0 whatever momentum or weight decay do."""
    loss_fn = _training_loss(apply_fn, label_smoothing, state.batch_stats, images, labels)
    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    if masked:
        grads = jax.tree.map(lambda g, m: jnp.where(m, g, 0.0), grads, state.mask)
    direction, opt_state = tx.update(grads, state.opt_state, state.params)
    lr = schedule(state.step)
    if masked:
        params = jax.tree.map(lambda p, d, m: jnp.where(m, p - lr * d, 0.0).astype(p.dtype),
                              state.params, direction, state.mask)
    else:
        params = jax.tree.map(lambda p, d: (p - lr * d).astype(p.dtype), state.params, direction)
    metrics = {"loss": loss * labels.shape[0],
               "correct": jnp.sum(jnp.argmax(logits, -1) == labels).astype(jnp.float32),
               "count": jnp.asarray(labels.shape[0], jnp.float32)}
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state)
    return new_state, metrics


def make_mesh(devices=None):
    """1-D mesh named 'data' over `devices` (default: all devices, across hosts)."""
    devices = np.asarray(jax.devices() if devices is None else devices)
    return jax.sharding.Mesh(devices, ("data",))


@dataclasses.dataclass(frozen=True)
class Trainer:
    """Jitted training and evaluation of one model under one recipe. Holds no training state."""

    model: Any
    tx: optax.GradientTransformation
    schedule: Callable
    mesh: Any
    batch_size: int
    steps_per_epoch: int
    seed: int
    augment: bool
    compute_dtype: Any = jnp.float32
    eval_batch_size: int = 1000
    masked: bool = True
    fused_loop: bool | None = None   # many steps per jitted call; None = on accelerators only (see train_steps)
    label_smoothing: float = 0.0
    mask_update: MaskUpdate | None = None   # a mask that changes during training (elax.mask_updates)

    def __post_init__(self):
        n = self.mesh.size
        for name in ("batch_size", "eval_batch_size"):
            if getattr(self, name) % n:
                raise ValueError(f"{name}={getattr(self, name)} must be divisible by the {n} devices.")

    # -- training -------------------------------------------------------------------------------------------
    @functools.cached_property
    def batch_spec(self) -> BatchSpec:
        return BatchSpec(self.seed, self.batch_size, self.steps_per_epoch, self.augment,
                                  self.compute_dtype)

    # The seed enters the jitted programs as an argument, not a constant: Trainers that differ only in seed
    # (replicates, the runs of a stack) compile the same program, which the compilation cache then serves.
    def _run_order(self, step, seed, data: DeviceSource):
        """The permutation the epoch of `step` reads for `seed`."""
        return data.epoch_order(dataclasses.replace(self.batch_spec, seed=seed), step)

    def _run_step(self, state, totals, seed, data: DeviceSource, order):
        """One step on the batch of `state.step` for `seed` (gathered, augmented and normalised on the device);
        vmapped over a leading run axis for stacked runs."""
        spec = dataclasses.replace(self.batch_spec, seed=seed)
        images, labels = data.train_batch(spec, state.step, order)
        batch_sharding = NamedSharding(self.mesh, P("data"))   # under vmap: the run axis stays unsharded
        images = jax.lax.with_sharding_constraint(images, batch_sharding)
        labels = jax.lax.with_sharding_constraint(labels, batch_sharding)
        return self._step_on(state, totals, images, labels)

    def _step_on(self, state, totals, images, labels):
        """One train step on a normalised batch, its metrics added to `totals`."""
        state, metrics = train_step(state, images, labels, apply_fn=self.model.apply, tx=self.tx,
                                    schedule=self.schedule, masked=self.masked,
                                    label_smoothing=self.label_smoothing)
        return state, jax.tree.map(jnp.add, totals, metrics)

    @property
    def _seed(self):
        return jnp.asarray(self.seed, jnp.int32)

    def batch(self, data, step: int):
        """The normalised (augmented) batch that training reads at global `step`: SNIP/GraSP score batches."""
        if isinstance(data, StreamSource):
            images, labels = data.host_batch(self.batch_spec, step)
            sharding = NamedSharding(self.mesh, P("data"))
            images = jax.make_array_from_process_local_data(sharding, images)
            labels = jax.make_array_from_process_local_data(sharding, labels)
            return self._jit_normalize(images, mean=data.mean, std=data.std), labels
        return self._jit_batch(data, jnp.asarray(step, jnp.int32), self._seed)

    @functools.cached_property
    def _jit_normalize(self):
        return jax.jit(lambda x, mean, std: normalize(x, mean, std, self.compute_dtype),
                       static_argnames=("mean", "std"))

    @functools.cached_property
    def _jit_batch(self):
        def batch(data, step, seed):
            spec = dataclasses.replace(self.batch_spec, seed=seed)
            return data.train_batch(spec, step, self._run_order(step, seed, data))

        return jax.jit(batch)

    @functools.cached_property
    def _run_steps(self):
        def run(state, seed, data: DeviceSource, num_steps):
            # The caller keeps every call inside one epoch, so one permutation serves all its steps.
            order = self._run_order(state.step, seed, data)
            body = lambda _, carry: self._run_step(*carry, seed, data, order)
            return jax.lax.fori_loop(0, num_steps, body, (state, _zero_metrics()))

        return jax.jit(run, donate_argnums=(0,), out_shardings=NamedSharding(self.mesh, P()))

    @functools.cached_property
    def _one_step(self):
        return jax.jit(self._run_step, donate_argnums=(0, 1), out_shardings=NamedSharding(self.mesh, P()))

    @functools.cached_property
    def _jit_epoch_order(self):
        return jax.jit(self._run_order)

    def replicate(self, tree):
        """`tree` replicated over the mesh (a no-op for arrays already there, e.g. the previous step's state).

        Fresh and restored states live on one device; placing them avoids an error on several devices and a
        second compilation of the training loop.
        """
        return jax.device_put(tree, NamedSharding(self.mesh, P()))

    @property
    def runs_fused(self) -> bool:
        """Whether `train_steps` runs many steps in one jitted fori_loop (`fused_loop`, default: on accelerators)."""
        return self.fused_loop if self.fused_loop is not None else fused_by_default()

    def train_steps(self, state: TrainState, data, num_steps: int):
        """Run `num_steps` steps (not crossing an epoch boundary) on a DeviceSource or StreamSource; returns
        (state, summed metrics).

        `state` is donated: use the returned state, not the one passed in.
        """
        state = self.replicate(state)
        if isinstance(data, StreamSource):
            return self._train_streamed(state, data, num_steps)
        seed = self._seed
        if self.runs_fused:
            return self._run_steps(state, seed, data, jnp.asarray(num_steps, jnp.int32))
        order = self._jit_epoch_order(state.step, seed, data)
        totals = self.replicate(_zero_metrics())
        for _ in range(num_steps):
            state, totals = self._one_step(state, totals, seed, data, order)
        return state, totals

    # -- masks that change during training (elax.mask_updates) -------------------------------------------
    def update_mask(self, state: TrainState, data) -> TrainState:
        """`state` after the mask update due before step `state.step`: the update sees the dense gradients at the
        current params on the batch of that step. Weights turned off are zeroed, and so is the optimizer state of
        every weight whose mask changed (regrown weights start at zero with zero optimizer state)."""
        images, labels = self.batch(data, int(state.step))
        key = jax.random.fold_in(self.batch_spec.key(3), state.step)   # purpose 3: mask updates
        return self._jit_update_mask(self.replicate(state), images, labels, key)

    @functools.cached_property
    def _jit_update_mask(self):
        def update(state, images, labels, key):
            loss_fn = _training_loss(self.model.apply, self.label_smoothing, state.batch_stats, images, labels)
            grads = jax.grad(lambda p: loss_fn(p)[0])(state.params)
            update = self.mask_update
            mask = update.fn(state.params, state.mask, grads, state.step, key, update.ctx)
            kept = jax.tree.map(jnp.logical_and, mask, state.mask)
            opt_state = optax.tree_utils.tree_map_params(
                self.tx, lambda s, k: jnp.where(k, s, jnp.zeros_like(s)), state.opt_state, kept,
                transform_non_params=lambda s, *_: s)
            params = jax.tree.map(lambda p, m: jnp.where(m, p, jnp.zeros_like(p)), state.params, mask)
            return state.replace(params=params, mask=mask, opt_state=opt_state)

        return jax.jit(update, donate_argnums=(0,), out_shardings=NamedSharding(self.mesh, P()))

    # -- stacked runs: K tickets of this model and recipe in one program --------------------------------
    def train_steps_stacked(self, states: TrainState, seeds, data: DeviceSource, num_steps: int):
        """`train_steps` for K runs at once: `states` has a leading run axis (`stack`), run k reads the batches
        (order and augmentation) of seed `seeds[k]`, all at the same step. Returns (states, metrics [K])."""
        if isinstance(data, StreamSource):
            raise ValueError("Stacked runs read the device source (data.source=device); set train.stack=1 to "
                             "stream.")
        states, seeds = self.replicate((states, jnp.asarray(seeds, jnp.int32)))
        totals = self.replicate(jax.tree.map(lambda z: jnp.zeros(seeds.shape, z.dtype), _zero_metrics()))
        if self.runs_fused:
            return self._run_stacked(states, totals, seeds, data, jnp.asarray(num_steps, jnp.int32))
        orders = self._stacked_orders(states.step, seeds, data)
        for _ in range(num_steps):
            states, totals = self._stacked_step(states, totals, seeds, data, orders)
        return states, totals

    def _run_orders(self, steps, seeds, data: DeviceSource):
        """`_run_order` of each run of a stack (the data is shared)."""
        return jax.vmap(self._run_order, in_axes=(0, 0, None))(steps, seeds, data)

    def _run_steps_of_stack(self, states, totals, seeds, data: DeviceSource, orders):
        """`_run_step` of each run of a stack (the data is shared)."""
        return jax.vmap(self._run_step, in_axes=(0, 0, 0, None, 0))(states, totals, seeds, data, orders)

    @functools.cached_property
    def _stacked_step(self):
        return jax.jit(self._run_steps_of_stack, donate_argnums=(0, 1), out_shardings=NamedSharding(self.mesh, P()))

    @functools.cached_property
    def _stacked_orders(self):
        return jax.jit(self._run_orders)

    @functools.cached_property
    def _run_stacked(self):
        def run(states, totals, seeds, data, num_steps):
            orders = self._run_orders(states.step, seeds, data)
            body = lambda _, carry: self._run_steps_of_stack(*carry, seeds, data, orders)
            return jax.lax.fori_loop(0, num_steps, body, (states, totals))

        return jax.jit(run, donate_argnums=(0, 1), out_shardings=NamedSharding(self.mesh, P()))

    # -- streamed input: batches built on the host, one jitted call per step -----------------------------
    def _train_streamed(self, state, data, num_steps: int):
        totals = self.replicate(_zero_metrics())
        for images, labels in data.train_batches(self.batch_spec, int(state.step), num_steps, self.mesh):
            state, totals = self._host_step(state, totals, images, labels, mean=data.mean, std=data.std)
        return state, totals

    @functools.cached_property
    def _host_step(self):
        def step(state, totals, images, labels, mean, std):
            return self._step_on(state, totals, normalize(images, mean, std, self.compute_dtype), labels)

        return jax.jit(step, donate_argnums=(0, 1), static_argnames=("mean", "std"),
                       out_shardings=NamedSharding(self.mesh, P()))

    def _evaluate_streamed(self, params, batch_stats, data) -> dict:
        params, batch_stats = self.replicate((params, batch_stats))
        sums = self.replicate(jnp.zeros(2, jnp.float32))
        for images, labels, valid in data.eval_batches(self.eval_batch_size, self.mesh):
            sums = sums + self._eval_batch(params, batch_stats, images, labels, valid, mean=data.mean,
                                           std=data.std)
        loss, correct = (float(v) for v in sums)
        n = len(data.test_records)
        return {"loss": loss / n, "accuracy": correct / n}

    @functools.cached_property
    def _eval_batch(self):
        def one(params, batch_stats, images, labels, valid, mean, std):
            return jnp.stack(self._eval_sums(params, batch_stats, images, labels, valid, mean, std))

        return jax.jit(one, static_argnames=("mean", "std"), out_shardings=NamedSharding(self.mesh, P()))

    def _eval_sums(self, params, batch_stats, images, labels, valid, mean, std):
        """(summed loss, correct count) over the `valid` examples of one uint8 batch, BatchNorm in inference."""
        x = normalize(images, mean, std, self.compute_dtype)
        logits = self.model.apply({"params": params, "batch_stats": batch_stats}, x, train=False)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        return (jnp.sum(jnp.where(valid, losses, 0.0)),
                jnp.sum((jnp.argmax(logits, -1) == labels) & valid).astype(jnp.float32))

    # -- evaluation -----------------------------------------------------------------------------------------
    @functools.cached_property
    def _evaluate(self):
        batch_sharding = NamedSharding(self.mesh, P(None, "data"))
        eb = self.eval_batch_size

        def evaluate(params, batch_stats, images, labels, mean, std):
            n = labels.shape[0]
            pad = (-n) % eb
            images = jnp.pad(images, [(0, pad)] + [(0, 0)] * (images.ndim - 1))
            valid = jnp.arange(n + pad) < n
            labels = jnp.pad(labels, (0, pad))
            batches = (images.reshape(-1, eb, *images.shape[1:]), labels.reshape(-1, eb), valid.reshape(-1, eb))
            batches = jax.lax.with_sharding_constraint(batches, batch_sharding)

            one = lambda batch: self._eval_sums(params, batch_stats, *batch, mean, std)
            loss, correct = jax.tree.map(jnp.sum, jax.lax.map(one, batches))
            return {"loss": loss / n, "accuracy": correct / n}

        return jax.jit(evaluate, static_argnames=("mean", "std"))

    def evaluate(self, params, batch_stats, data: DeviceSource, split: str = "test") -> dict:
        """Mean loss and accuracy over a whole split, BatchNorm in inference mode."""
        if isinstance(data, StreamSource):
            if split != "test":
                raise ValueError("A streamed source evaluates its test split only.")
            return self._evaluate_streamed(params, batch_stats, data)
        images, labels = (data.test_images, data.test_labels) if split == "test" else (
            data.train_images, data.train_labels)
        params, batch_stats = self.replicate((params, batch_stats))
        metrics = self._evaluate(params, batch_stats, images, labels, mean=data.mean, std=data.std)
        return {k: float(v) for k, v in metrics.items()}


def fused_by_default() -> bool:
    """Many steps per jitted call on accelerators. XLA:CPU runs backward convolutions inside a while loop 15-40x
    slower than outside one (jax-ml/jax#12868; docs/performance.md), so on CPU every step is its own call."""
    return jax.default_backend() != "cpu"


def _zero_metrics():
    return {"loss": jnp.zeros((), jnp.float32), "correct": jnp.zeros((), jnp.float32),
            "count": jnp.zeros((), jnp.float32)}


def stack(trees):
    """One tree with a leading run axis from K trees of equal structure (states, params, masks)."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def unstack(tree, count: int) -> list:
    """The K trees of a stacked tree."""
    return [jax.tree.map(lambda leaf: leaf[k], tree) for k in range(count)]
