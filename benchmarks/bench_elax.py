"""elax side of benchmarks/throughput.py: the tickets and Trainers it times, the timing helpers (shared with
bench_torch.py), and the step and epoch benchmarks of every elax row."""

import dataclasses
import functools
import statistics
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from elax import config as config_lib, data as data_lib, masks, pruning, runs, train
from elax.models import family_of, get_model, init_variables, split_variables

from bench_floors import CIFAR_SHAPE, xla_costs

CIFAR_TRAIN_IMAGES = 50_000
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
PRUNE_LEVELS = 7            # IMP levels of 20%: 79.03% sparsity


def random_dataset(num_train: int, image_shape=CIFAR_SHAPE, num_classes: int = 10, seed: int = 0):
    """CIFAR-shaped random uint8 images and labels (speed does not depend on pixel values)."""
    return data_lib.synthetic(num_train, 16, image_shape, num_classes=num_classes, seed=seed, mean=CIFAR_MEAN,
                              std=CIFAR_STD)


def make_trainer(model, num_train: int, batch_size: int, *, dtype=jnp.float32, masked=True, augment=True,
                 fused_loop=None, seed=0) -> train.Trainer:
    """The Trainer `elax.runs.setup` builds for the default (CIFAR ResNet) recipe at this batch size."""
    config = config_lib.default_config()
    config.train.batch_size, config.data.augment, config.seed = batch_size, augment, seed
    return runs.make_trainer(config, model, num_train, train.make_mesh(), dtype, masked=masked,
                             fused_loop=fused_loop)


def num_classes(model_name: str) -> int:
    """1000 for the ImageNet families, 10 (CIFAR-10) otherwise."""
    return 1000 if model_name.startswith("imagenet") else 10


def build(model_name: str, **options):
    """The registry model `model_name` with its dataset's number of classes."""
    return get_model(model_name, num_classes=num_classes(model_name), **options)


def make_ticket(model_name: str, image_shape=CIFAR_SHAPE, levels: int = PRUNE_LEVELS, seed: int = 0):
    """(params, batch_stats, mask): init weights and an IMP-style global magnitude mask after `levels` levels, over
    the weights the family prunes."""
    params, batch_stats = split_variables(init_variables(build(model_name), jax.random.key(seed), image_shape))
    mask = masks.build(params)
    prunable = family_of(model_name).prunable
    for _ in range(levels):
        mask = pruning.prune_magnitude(params, mask, 0.2, prunable)
    return params, batch_stats, mask


@dataclasses.dataclass(frozen=True)
class Plan:
    """What to time: `repeats` calls of `steps` steps each (fewer once `max_seconds` of timed work are spent)."""
    batch_size: int = 128
    steps: int = 100
    warmup: int = 20
    repeats: int = 5
    max_seconds: float = 60.0
    epoch_images: int = CIFAR_TRAIN_IMAGES
    epoch_repeats: int = 3
    matmul_size: int = 8192
    copy_mib: int = 1024


def seconds_of(fn) -> float:
    """Wall seconds of `fn()` (which blocks until its work is done)."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def time_repeats(call, repeats: int, max_seconds: float) -> list[float]:
    """Seconds of each blocking `call()`; at least one, at most `repeats`, none begun after `max_seconds`."""
    times = [seconds_of(call)]
    while len(times) < repeats and sum(times) < max_seconds:
        times.append(seconds_of(call))
    return times


def _compilations(jitted):
    """How many programs `jitted` holds (1 when nothing recompiled); None where JAX does not say."""
    size = getattr(jitted, "_cache_size", None)
    return size() if size else None


def record(times, steps, batch_size, **extra) -> dict:
    """A result row: median images/s over `times` (seconds of `steps` steps each) and the raw numbers."""
    images = steps * batch_size
    return {"images_per_s": statistics.median(images / t for t in times), "times_s": times, "steps": steps,
            "images_per_repeat": images, **extra}


def fused_loop(trainer: train.Trainer | None = None) -> bool:
    """The path `trainer.train_steps` takes (without a trainer: this backend's default)."""
    return trainer.runs_fused if trainer is not None else train.fused_by_default()


def _fixed_batch(data: data_lib.DeviceSource, batch_size: int, dtype):
    images = data_lib.normalize(data.train_images[:batch_size], data.mean, data.std, dtype)
    return jax.block_until_ready((images, data.train_labels[:batch_size]))


def bench_step(trainer, ticket, data, plan: Plan) -> dict:
    """Pure step rate of the real `train_step` on a fixed pre-normalised device batch, on the path `Trainer` takes
    on this backend: `plan.steps` steps in one jitted fori_loop (accelerators), or the jitted `train_step` called
    once per step from Python (CPU)."""
    fused = fused_loop(trainer)
    box = [trainer.replicate(train.create_state(*ticket, trainer.tx))]
    images, labels = _fixed_batch(data, plan.batch_size, trainer.compute_dtype)
    step = functools.partial(train.train_step, apply_fn=trainer.model.apply, tx=trainer.tx,
                             schedule=trainer.schedule, masked=trainer.masked)
    one = jax.jit(step, donate_argnums=(0,))
    costs = xla_costs(one, box[0], images, labels)
    if fused:
        loop = lambda state, num_steps: jax.lax.fori_loop(0, num_steps, lambda _, s: step(s, images, labels)[0],
                                                          state)
        program = jax.jit(loop, donate_argnums=(0,))

        def call(n):   # num_steps is traced: the warm-up call compiles the timed program
            box[0] = jax.block_until_ready(program(box[0], jnp.int32(n)))
    else:
        program = one

        def call(n):
            for _ in range(n):
                box[0], _ = one(box[0], images, labels)
            jax.block_until_ready(box[0])

    warmup_s = seconds_of(lambda: call(plan.warmup if fused else max(plan.warmup, 1)))
    times = time_repeats(lambda: call(plan.steps), plan.repeats, plan.max_seconds)
    return record(times, plan.steps, plan.batch_size, path="fused" if fused else "per-step", warmup_s=warmup_s,
                   compilations=_compilations(program), xla_cost_per_step=costs)


def bench_epoch(trainer, ticket, data, plan: Plan, steps: int | None = None) -> dict:
    """`Trainer.train_steps` itself: in-jit shuffle, gather, (crop, flip,) normalise, step; `steps` per timed call
    (default: a whole epoch).

    The state comes from `create_state` exactly as `elax.runs` makes it; warm-up calls are repeated until
    nothing new compiles, and the number of compilations is recorded. The path is read off the program that
    `train_steps` built.
    """
    box = [train.create_state(*ticket, trainer.tx)]

    def call(n):
        box[0], _ = jax.block_until_ready(trainer.train_steps(box[0], data, n))

    # Trainer's cached programs (jitted on first use): the fused loop, the single step, or both if it ran both.
    kinds = {"_run_steps": "fused", "_one_step": "per-step"}
    built = lambda: [name for name in kinds if name in vars(trainer)]
    programs = lambda: sum(_compilations(getattr(trainer, name)) or 0 for name in built())
    # A per-step call of 0 steps runs no step: warm up with at least one.
    warmup_s = [seconds_of(lambda: call(plan.warmup if fused_loop(trainer) else max(plan.warmup, 1)))]
    while len(warmup_s) < 4:
        before = programs()
        warmup_s.append(seconds_of(lambda: call(0)))
        if programs() == before:
            break
    # Timed calls start a few steps into an epoch: the work is the same (one permutation per call, batch
    # indices wrap around the epoch).
    steps = steps or trainer.steps_per_epoch
    times = time_repeats(lambda: call(steps), plan.epoch_repeats, plan.max_seconds)
    return record(times, steps, plan.batch_size, path="+".join(kinds[n] for n in built()), warmup_s=warmup_s,
                   epoch_images=data.num_train, compilations=programs())


@dataclasses.dataclass(frozen=True)
class Variant:
    """One elax row: a benchmark, the Trainer it gets, and whether it forces the path Trainer does not take."""
    bench: Callable
    options: dict = dataclasses.field(default_factory=dict)   # make_trainer options
    other_path: bool = False   # the path Trainer does not take on this backend, timed for the record


ELAX_VARIANTS = {
    "elax_step_masked_fp32": Variant(bench_step),
    "elax_step_dense_fp32": Variant(bench_step, {"masked": False}),
    "elax_step_masked_bf16": Variant(bench_step, {"dtype": jnp.bfloat16}),
    "elax_epoch_noaug_masked_fp32": Variant(bench_epoch, {"augment": False}),
    "elax_epoch_masked_fp32": Variant(bench_epoch),
    # CPU only: the fused loop, slow there (jax-ml/jax#12868, docs/performance.md): one compile, then one call of
    # one step.
    "elax_epoch_fused_masked_fp32": Variant(bench_epoch, {"fused_loop": True}, other_path=True),
    # Accelerators only: one call per step, what the fused loop saves there.
    "elax_epoch_per_step_masked_fp32": Variant(bench_epoch, {"fused_loop": False}, other_path=True),
}


def _selected(name: str, variant: Variant, variants, other_path: bool) -> bool:
    """In `variants` (None: all), and for an `other_path` row: wanted, and its path not this backend's default."""
    if variants is not None and name not in variants:
        return False
    return not variant.other_path or (other_path and variant.options["fused_loop"] != fused_loop())


def bench_elax(model_name, plan: Plan, image_shape=CIFAR_SHAPE, variants=None, other_path=True,
               log=print) -> tuple[dict, dict]:
    """All elax variants of one model that run on this backend -> ({variant: record}, ticket info)."""
    ticket = make_ticket(model_name, image_shape)
    mesh = train.make_mesh()
    classes = num_classes(model_name)
    step_data = data_lib.put_on_devices(random_dataset(plan.batch_size, image_shape, classes), mesh)
    epoch_data = data_lib.put_on_devices(random_dataset(plan.epoch_images, image_shape, classes, seed=1), mesh)
    results = {}
    for name, v in ELAX_VARIANTS.items():
        if not _selected(name, v, variants, other_path):
            continue
        epoch = v.bench is bench_epoch
        model = build(model_name, dtype=v.options.get("dtype", jnp.float32))
        trainer = make_trainer(model, plan.epoch_images if epoch else plan.batch_size, plan.batch_size, **v.options)
        data = epoch_data if epoch else step_data
        if v.other_path and fused_loop(trainer):
            # The fused loop on CPU, slow: compile only, then one timed call of one step.
            results[name] = bench_epoch(trainer, ticket, data, dataclasses.replace(plan, warmup=0, epoch_repeats=1),
                                        steps=1)
        else:
            results[name] = v.bench(trainer, ticket, data, plan)
        log(f"  {model_name} {name} ({results[name]['path']}): {results[name]['images_per_s']:.1f} images/s")
    kept, total = masks.count(ticket[2], family_of(model_name).prunable)
    info = {"sparsity": 1.0 - kept / total, "kept_weights": kept, "prunable_weights": total,
            "params": int(sum(np.size(p) for p in jax.tree.leaves(ticket[0])))}
    return results, info
