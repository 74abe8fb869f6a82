"""What one run holds fixed: its config, model, data on the devices and jitted trainer (`RunContext`)."""

import dataclasses
import functools
import hashlib
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from elax import config as config_lib, data as data_lib, masks, train, workdir as wd
from elax.models import Family, family_of, get_model, init_variables


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
        return masks.prunable_kernels(self.family.prune_exclude + tuple(self.config.lottery.exclude))

    def init_variables(self, seed: int):
        return init_variables(self.model, jax.random.key(seed), self.data.image_shape)

    @functools.cached_property
    def template_state(self) -> train.TrainState:
        """A state of the right structure to restore checkpoints into."""
        v = self.init_variables(0)
        return self.fresh_state(v["params"], v["batch_stats"], masks.build(v["params"]), 0)

    def fresh_state(self, params, batch_stats, mask, step: int) -> train.TrainState:
        return train.create_state(params, batch_stats, mask, self.trainer.tx, step)

    def claimed(self, workdir: str):
        """`workdir.claimed` for this run: its config and what its data holds (`dataset_facts`)."""
        return wd.claimed(workdir, self.config.to_dict(), dataset_facts(self.data))


def setup(config: ml_collections.ConfigDict, log=None) -> RunContext:
    """Validate `config`, open the data (on the devices, or streamed), and build the model and trainer."""
    config_lib.validate(config)
    mesh = train.make_mesh()
    data = _open_stream(config.data) if data_lib.is_streamed(config.data) else _load_on_devices(config.data, mesh)
    if log:
        log(f"data: {config.data.name}, {data.num_train} training images, {data.describe()}")
    config_lib.validate_for_dataset(config, data.num_train, data.image_shape)
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
    return _device_data(d.name, d.dir or None, d.train_subset, d.pad_to, mesh)


@functools.lru_cache(maxsize=1)
def _device_data(name: str, data_dir: str | None, train_subset: int, pad_to: int, mesh) -> data_lib.DeviceSource:
    # The runs of an experiment read one dataset: read and put on the devices once per process.
    return data_lib.put_on_devices(_in_memory(name, data_dir, train_subset, pad_to), mesh)


def _in_memory(name: str, data_dir: str | None, train_subset: int, pad_to: int) -> data_lib.Dataset:
    """Dataset `name` read into host memory, padded, then cut to its training subset."""
    return data_lib.train_subset(data_lib.pad_images(data_lib.load(name, data_dir), pad_to), train_subset)


def _open_stream(d: ml_collections.ConfigDict) -> data_lib.StreamSource:
    """Records of an encoded dataset on disk, or of a dataset held in memory (`data.source=stream`)."""
    from elax.data import records
    workers = min(16, os.cpu_count() or 1) if d.workers == -1 else d.workers
    options = data_lib.ImageOptions(d.image_size, d.resize_size, tuple(d.crop_scale), tuple(d.crop_ratio))
    if d.name in data_lib.STREAMED_ONLY:
        s = records.open_splits(d.name, d.dir)
        return data_lib.StreamSource(s.train, s.test, s.num_classes, s.mean, s.std, options, workers, s.where)
    # Decoded images in memory: threads in this process (worker processes would each get a copy of the dataset
    # and have no decoding to do).
    dataset = _in_memory(d.name, d.dir or None, d.train_subset, d.pad_to)
    return data_lib.StreamSource(
        records.ArrayRecords(dataset.train_images, dataset.train_labels),
        records.ArrayRecords(dataset.test_images, dataset.test_labels), dataset.num_classes, dataset.mean,
        dataset.std, options, 0, dataset.source)


def make_trainer(config: ml_collections.ConfigDict, model, num_train: int, mesh, dtype,
                 **options) -> train.Trainer:
    """The Trainer of `config`'s recipe (optimizer, LR schedule, batch, seed, augmentation) for `num_train`
    training examples; `options` are further `train.Trainer` fields (e.g. masked, fused_loop).

    One Trainer (and so one compilation of each of its jitted programs) per model, recipe, seed and mesh in a
    process: the runs of an experiment that train one model the same way (target IMP, ETT, baselines) share it.
    """
    t = config.train
    return _trainer(_TrainerKey(
        model=model, num_train=num_train, mesh=mesh, dtype=jnp.dtype(dtype).name, seed=config.seed,
        augment=config.data.augment, batch_size=t.batch_size, lr=t.lr, momentum=t.momentum,
        weight_decay=t.weight_decay, milestones=tuple(t.milestones), gamma=t.gamma, warmup_epochs=t.warmup_epochs,
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
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    milestones: tuple
    gamma: float
    warmup_epochs: float
    eval_batch_size: int
    options: tuple


@functools.lru_cache(maxsize=16)
def _trainer(k: _TrainerKey) -> train.Trainer:
    steps_per_epoch = config_lib.steps_per_epoch(k.num_train, k.batch_size)
    return train.Trainer(
        model=k.model, tx=train.make_optimizer(k.momentum, k.weight_decay),
        schedule=train.lr_schedule(k.lr, steps_per_epoch, k.milestones, k.gamma, k.warmup_epochs),
        mesh=k.mesh, batch_size=k.batch_size, steps_per_epoch=steps_per_epoch, seed=k.seed, augment=k.augment,
        compute_dtype=jnp.dtype(k.dtype), eval_batch_size=k.eval_batch_size, **dict(k.options))


def _eval_batch_size(requested: int, num_devices: int) -> int:
    return max(num_devices, requested - requested % num_devices)
