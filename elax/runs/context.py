"""What one run holds fixed: its config, model, data on the devices and jitted trainer (`RunContext`)."""

import contextlib
import dataclasses
import functools
import hashlib
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from elax import config as config_lib, data as data_lib, mask_updates, masks, nm, optim, train, workdir as wd
from elax.config import ConfigError
from elax.data import catalog, records
from elax.models import Family, family_of, get_model, init_variables, split_variables, variable_shapes
from elax.runs.checks import check_for_dataset, check_training


@dataclasses.dataclass(frozen=True)
class RunContext:
    """Everything fixed for one run: config, model, data on the devices, and the jitted trainer."""

    config: ml_collections.ConfigDict
    model: Any
    data: data_lib.DeviceSource | data_lib.StreamSource
    trainer: train.Trainer
    num_classes: int

    @property
    def model_name(self) -> str:
        return self.config.model.name

    @property
    def family(self) -> Family:
        return family_of(self.model)

    @property
    def total_steps(self) -> int:
        return self.config.train.epochs * self.trainer.steps_per_epoch

    @property
    def rewind_step(self) -> int:
        return self.config.lottery.rewind_steps

    @property
    def prunable(self) -> masks.Predicate:
        return prunable_of(self.config, self.family)

    def init_variables(self, seed: int) -> tuple[dict, dict]:
        """(params, batch_stats) of the model's initialisation from `seed` (batch_stats {} without BatchNorm)."""
        return split_variables(init_variables(self.model, jax.random.key(seed), self.data.image_shape))

    @functools.cached_property
    def template_state(self) -> train.TrainState:
        """The structure to restore checkpoints into: a state of jax.ShapeDtypeStructs, traced from the model's
        variable shapes (a run that only restores, e.g. a resumed or transferred one, compiles no init)."""
        params, batch_stats = split_variables(variable_shapes(self.model, self.data.image_shape))
        return jax.eval_shape(lambda p, b: self.fresh_state(p, b, masks.build(p), 0), params, batch_stats)

    def fresh_state(self, params, batch_stats, mask, step: int) -> train.TrainState:
        return train.create_state(params, batch_stats, mask, self.trainer.tx, step)

    @contextlib.contextmanager
    def claimed(self, workdir: str):
        """`workdir.claimed` for this run: its config and what its data holds (`dataset_facts`). Streamed data's
        pipelines (Grain's worker processes) stop when it ends, however it ends."""
        with wd.claimed(workdir, self.config.to_dict(), dataset_facts(self.data)):
            try:
                yield
            finally:
                if isinstance(self.data, data_lib.StreamSource):
                    self.data.close()


def prunable_of(config: ml_collections.ConfigDict, family: Family) -> masks.Predicate:
    """The leaves a run prunes: its family's prunable kernels, less `lottery.exclude`, less (with an N:M
    `lottery.structure`) the layers whose group axis M does not divide."""
    prunable = masks.prunable_kernels(family.prune_exclude + tuple(config.lottery.exclude))
    structure = nm.parse(config.lottery.structure)
    return nm.grouped_prunable(prunable, structure[1]) if structure else prunable


def with_mask_update(ctx: RunContext, update: mask_updates.MaskUpdate) -> RunContext:
    """`ctx` whose trainer moves the mask with `update` (a baseline's own, whatever config.mask_update says)."""
    trainer = make_trainer(ctx.config, ctx.model, ctx.data.num_train, ctx.trainer.mesh, ctx.trainer.compute_dtype,
                           mask_update=update)
    return dataclasses.replace(ctx, trainer=trainer)


def setup(config: ml_collections.ConfigDict, log=None) -> RunContext:
    """Check `config` (`elax.runs.checks.check_training`), then open the run: `open_run`."""
    check_training(config)
    return open_run(config, log)


def open_run(config: ml_collections.ConfigDict, log=None) -> RunContext:
    """Open the data (on the devices, or streamed) of a checked `config`, and build the model and trainer."""
    mesh = train.make_mesh()
    data = (_open_stream(config.data, config.train.batch_size, log) if catalog.is_streamed(config.data)
            else _load_on_devices(config.data, mesh))
    if log:
        log(f"data: {config.data.name}, {data.num_train} training images, {data.describe()}")
    check_for_dataset(config, data.num_train, data.image_shape, mesh.size)
    dtype = jnp.bfloat16 if config.train.dtype == "bfloat16" else jnp.float32
    model = get_model(config.model.name, num_classes=data.num_classes, dtype=dtype)
    trainer = make_trainer(config, model, data.num_train, mesh, dtype)
    return RunContext(config, model, data, trainer, data.num_classes)


def dataset_facts(data) -> dict:
    """What a run's data holds, as its workdir records it: class and image counts, and a digest of the class
    folders' names where the dataset has them (ImageFolder)."""
    facts = {"classes": data.num_classes, "train_images": data.num_train, "test_images": data.num_test}
    names = getattr(getattr(data, "train_records", None), "classes", None)
    if names is not None:
        facts["class_names_sha1"] = hashlib.sha1("\n".join(names).encode()).hexdigest()[:12]
    return facts


def _load_on_devices(d: ml_collections.ConfigDict, mesh) -> data_lib.DeviceSource:
    return _device_data(d.name, d.dir or None, d.train_subset, d.pad_to, mesh, _download(d))


@functools.lru_cache(maxsize=1)
def _device_data(name: str, data_dir: str | None, train_subset: int, pad_to: int, mesh,
                 download: bool = False) -> data_lib.DeviceSource:
    # The runs of an experiment read one dataset: read and put on the devices once per process.
    return data_lib.put_on_devices(_in_memory(name, data_dir, train_subset, pad_to, download), mesh)


def _download(d: ml_collections.ConfigDict) -> bool:
    # .get: a config saved before data.download existed never downloads.
    return bool(d.get("download", False))


def _in_memory(name: str, data_dir: str | None, train_subset: int, pad_to: int,
               download: bool = False) -> data_lib.Dataset:
    """Dataset `name` read into host memory (fetched first if missing and `download`), padded, then cut to its
    training subset."""
    dataset = data_lib.load(name, data_dir, download=download)
    for key, value, change in (("data.pad_to", pad_to, data_lib.pad_images),
                               ("data.train_subset", train_subset, data_lib.train_subset)):
        try:
            dataset = change(dataset, value)
        except ValueError as e:   # the value does not fit the data: name the key
            raise ConfigError(key, str(e)) from None
    return dataset


# What a Grain worker holds (resident: Python, NumPy and JAX, which Grain imports, and the batches in flight).
WORKER_MEMORY = 200 * 2**20


def stream_workers(requested: int, num_train: int, batch_size: int) -> tuple[int, str]:
    """Grain worker processes for `data.workers` (-1: one per core, at most 16; 0: none) and why there are fewer
    than asked ('' if not). The count never changes results (order and augmentation are functions of (seed,
    step)), so one too large for this machine is lowered rather than refused, as a run resumed elsewhere may
    need: to 2 per CPU core (decoding is CPU work), to the batches of an epoch (a worker makes whole batches), and
    to what the available memory holds for the training and the test pipelines' workers."""
    if requested == 0:
        return 0, ""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    wanted = min(16, cores) if requested == -1 else requested
    batches = config_lib.steps_per_epoch(num_train, batch_size)
    limits = [(2 * cores, f"at most 2 per CPU core ({cores} cores)"),
              (batches, f"an epoch has {batches} batches, and a worker makes whole batches")]
    memory = available_memory()
    if memory is not None:
        held = max(1, memory // (2 * WORKER_MEMORY))
        limits.append((held, f"the available memory ({memory / 2**30:.1f} GiB) holds about {held} for the "
                             "training and the test pipelines at ~200 MB a worker"))
    count, why = min(limits, key=lambda limit: limit[0])
    if count >= wanted:
        return wanted, ""
    return count, f"config.data.workers={requested} lowered to {count}: {why}."


def available_memory() -> int | None:
    """Bytes this process may still allocate: Linux's MemAvailable, or less under a cgroup (v2) limit; None
    where neither can be read."""
    found = []
    try:
        with open("/proc/meminfo") as f:
            found += [int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:")]
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open("/sys/fs/cgroup/memory.max") as f, open("/sys/fs/cgroup/memory.current") as g:
            limit = f.read().strip()
            if limit != "max":
                found.append(max(0, int(limit) - int(g.read())))
    except (OSError, ValueError):
        pass
    return min(found) if found else None


def _open_stream(d: ml_collections.ConfigDict, batch_size: int, log=None) -> data_lib.StreamSource:
    """Records of an encoded dataset on disk, or of a dataset held in memory (`data.source=stream`)."""
    options = data_lib.ImageOptions(d.image_size, d.resize_size, tuple(d.crop_scale), tuple(d.crop_ratio))
    if catalog.get(d.name).streamed_only:
        s = records.open_splits(d.name, d.dir)
        workers, lowered = stream_workers(d.workers, len(s.train), batch_size)
        if lowered and log:
            log(f"note: {lowered}")
        return data_lib.StreamSource(s.train, s.test, s.num_classes, s.mean, s.std, options, workers, s.where)
    # Decoded images in memory: threads in this process (worker processes would each get a copy of the dataset
    # and have no decoding to do).
    dataset = _in_memory(d.name, d.dir or None, d.train_subset, d.pad_to, _download(d))
    return data_lib.StreamSource(
        records.ArrayRecords(dataset.train_images, dataset.train_labels),
        records.ArrayRecords(dataset.test_images, dataset.test_labels), dataset.num_classes, dataset.mean,
        dataset.std, options, 0, dataset.source)


def make_trainer(config: ml_collections.ConfigDict, model, num_train: int, mesh, dtype, mask_update=None,
                 **options) -> train.Trainer:
    """The Trainer of `config`'s recipe (optimizer, LR schedule, batch, seed, augmentation, mask updates) for
    `num_train` training examples; `mask_update` (a bound `mask_updates.MaskUpdate`) replaces config.mask_update's;
    `options` are further `train.Trainer` fields (e.g. masked, fused_loop).

    One Trainer (and so one compilation of each of its jitted programs) per model, recipe, seed and mesh in a
    process: the runs of an experiment that train one model the same way (target IMP, ETT, baselines) share it.
    """
    t = config.train
    steps_per_epoch = config_lib.steps_per_epoch(num_train, t.batch_size)
    mask_update = mask_update or mask_updates.bind(config.mask_update.method, mask_updates.UpdateContext(
        prunable_of(config, family_of(model)), config.mask_update.every, t.epochs * steps_per_epoch,
        tuple(sorted(config.mask_update.to_dict().items()))))
    recipe = tuple(sorted((k, wd.config_value(v)) for k, v in wd.flatten(t.to_dict()).items()
                          if config_lib.KEYS[f"train.{k}"].recipe))
    return _trainer(_TrainerKey(
        model=model, num_train=num_train, mesh=mesh, dtype=jnp.dtype(dtype).name, seed=config.seed,
        augment=config.data.augment, train=recipe, mask_update=mask_update,
        eval_batch_size=_eval_batch_size(t.eval_batch_size, mesh.size), options=tuple(sorted(options.items()))))


@dataclasses.dataclass(frozen=True)
class _TrainerKey:
    """Everything a Trainer is built from (hashable: the key of the per-process Trainer cache)."""

    model: Any
    num_train: int
    mesh: Any
    dtype: str
    seed: int
    augment: bool
    train: tuple                 # the (key, value) pairs of config.train that are part of the recipe
    mask_update: Any
    eval_batch_size: int
    options: tuple


@functools.lru_cache(maxsize=16)
def _trainer(k: _TrainerKey) -> train.Trainer:
    t = ml_collections.ConfigDict(dict(k.train))
    steps_per_epoch = config_lib.steps_per_epoch(k.num_train, t.batch_size)
    return train.Trainer(
        model=k.model, tx=optim.make_optimizer(t), schedule=optim.make_schedule(t, steps_per_epoch),
        mesh=k.mesh, batch_size=t.batch_size, steps_per_epoch=steps_per_epoch, seed=k.seed, augment=k.augment,
        compute_dtype=jnp.dtype(k.dtype), eval_batch_size=k.eval_batch_size, label_smoothing=t.label_smoothing,
        mask_update=k.mask_update, **dict(k.options))


def _eval_batch_size(requested: int, num_devices: int) -> int:
    return max(num_devices, requested - requested % num_devices)
