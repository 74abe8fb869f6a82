"""The streamed batch source: for datasets that do not fit on a device (ImageNet), images are read, decoded and
augmented on the host by Grain (worker processes or threads), and each process feeds its share of every global
batch to its own devices (`jax.make_array_from_process_local_data`); normalisation runs on the device.

Order and augmentation are functions of (seed, step), as with `DeviceSource`: epoch e reads the same permutation
(`jax.random.permutation` of (seed, e)), the batch of step t holds positions t*B .. t*B+B-1 of it (the last batch
of an epoch wraps around), and example r of that batch is augmented with numpy's RNG seeded by (seed, t, r). So a
resumed run reads exactly what an uninterrupted one would, on any number of processes, and a small dataset read
through this path without augmentation gives exactly the device source's batches.

One Grain pipeline serves one epoch from the step it starts at (its workers receive that epoch's record indices);
it is built again when a run jumps (resume, a new level at the rewind step). While the device runs a step, the
host keeps the next two batches on their way to the devices (jitted steps and device puts are asynchronous), while
Grain's workers decode the ones after them.
"""

import collections
import contextlib
import dataclasses
import os
from typing import Any, Iterator

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from elax.data import images as image_ops


@dataclasses.dataclass(frozen=True)
class ImageOptions:
    """Crop and resize sizes of encoded images (ImageNet's defaults); small decoded images ignore them."""

    image_size: int = 224                     # train RandomResizedCrop and eval centre crop
    resize_size: int = 256                    # eval: shorter side resized to this first
    scale: tuple = image_ops.IMAGENET_SCALE
    ratio: tuple = image_ops.IMAGENET_RATIO


@dataclasses.dataclass(frozen=True)
class _Example:
    """Grain map (runs in the workers): (record index, step, row) -> (uint8 image, int32 label)."""

    records: Any
    seed: int
    train: bool
    augment: bool
    options: ImageOptions

    def __call__(self, item) -> tuple[np.ndarray, np.int32]:
        index, step, row = (int(v) for v in item)
        try:
            image, label = self.records[index]
        except PermissionError as error:  # not readable by this user: the file may be fine
            raise ValueError(self._bad_file("read", index, error.strerror, "Make it readable (chmod a+r) or "
                                            "delete it")) from None
        except OSError as error:  # removed, unreadable or a broken link since the scan
            raise ValueError(self._bad_file("read", index, error.strerror)) from None
        rng = np.random.default_rng((self.seed, step, row)) if self.train and self.augment else None
        o = self.options
        if self.records.encoded:
            image = self._decode(image, index)
            image = (image_ops.train_transform(image, rng, o.image_size, o.scale, o.ratio) if rng is not None
                     else image_ops.eval_transform(image, o.image_size, o.resize_size))
        elif rng is not None:
            image = image_ops.pad_crop_flip(image, rng)
        return np.ascontiguousarray(image), np.int32(label)

    def _decode(self, data: bytes, index: int) -> np.ndarray:
        try:
            return image_ops.decode(data)
        except ValueError as error:  # one bad file among a million: name it
            raise ValueError(self._bad_file("decode", index, error)) from None

    def _bad_file(self, verb: str, index: int, error, fix: str = "Replace or delete it") -> str:
        return (f"cannot {verb} {self.records.where(index)}: {error}. {fix} and run the same command; finished "
                "levels are kept.")


class StreamSource:
    """Training and test records streamed through Grain; mean/std normalise on the device."""

    def __init__(self, train, test, num_classes: int, mean: tuple, std: tuple, options=ImageOptions(),
                 workers: int = 0, where: str = ""):
        self.train_records, self.test_records = train, test
        self.num_classes, self.mean, self.std = num_classes, tuple(mean), tuple(std)
        self.options, self.workers, self.where = options, workers, where
        self._cursor = None   # (next step, iterator) of the pipeline in use

    def describe(self) -> str:
        readers = f"{self.workers} Grain worker processes" if self.workers else "Grain threads in this process"
        return f"streamed from {self.where or 'memory'} by {readers} (data.source=stream)"

    @property
    def num_train(self) -> int:
        return len(self.train_records)

    @property
    def num_test(self) -> int:
        return len(self.test_records)

    @property
    def image_shape(self) -> tuple:
        """The shape of the images the model sees."""
        if self.train_records.encoded:
            return (self.options.image_size, self.options.image_size, 3)
        return tuple(self.train_records.images.shape[1:])

    # -- training -------------------------------------------------------------------------------------------
    def train_batches(self, spec, step: int, num_steps: int, mesh) -> Iterator[tuple[jax.Array, jax.Array]]:
        """The global (images uint8, labels) of steps step .. step+num_steps-1 (within one epoch)."""
        next_step, batches = self._cursor if self._cursor else (None, None)
        if next_step != step or step % spec.steps_per_epoch == 0:  # a jump, or the previous epoch is used up
            if batches is not None:
                batches.close()   # stops its Grain threads and workers now, in this thread
            batches = _on_devices_ahead(self._epoch_batches(spec, step, mesh))
        for _ in range(num_steps):
            yield next(batches)
        self._cursor = (step + num_steps, batches)

    def host_batch(self, spec, step: int) -> tuple[np.ndarray, np.ndarray]:
        """This process's share of the batch of `step` as numpy (uint8 images, labels); no workers."""
        example = self._example(spec, train=True)
        examples = [example(item) for item in self._train_items(spec, step, step + 1)]
        return np.stack([e[0] for e in examples]), np.stack([e[1] for e in examples])

    def _epoch_batches(self, spec, step: int, mesh):
        end = (step // spec.steps_per_epoch + 1) * spec.steps_per_epoch
        items = self._train_items(spec, step, end)
        # Grain iterators are closed here, in this thread: left to the garbage collector, one may be closed from
        # one of its own prefetch threads, which fails.
        with contextlib.closing(self._pipeline(items, self._example(spec, train=True),
                                               _local_batch(spec.batch_size))) as it:
            for images, labels in it:
                yield _to_global(mesh, images), _to_global(mesh, labels)

    def _train_items(self, spec, start: int, stop: int) -> np.ndarray:
        """(record, step, row) of this process's examples of steps start..stop-1 (one epoch)."""
        n, local = self.num_train, _local_batch(spec.batch_size)
        epoch = start // spec.steps_per_epoch
        order = np.asarray(jax.random.permutation(jax.random.fold_in(spec.key(1), epoch), n))
        steps = np.repeat(np.arange(start, stop), local)
        rows = np.tile(jax.process_index() * local + np.arange(local), stop - start)
        positions = (steps % spec.steps_per_epoch) * spec.batch_size + rows
        return np.stack([order[positions % n], steps, rows], axis=1)

    def _example(self, spec, train: bool) -> _Example:
        return _Example(self.train_records if train else self.test_records, spec.seed if spec else 0, train,
                        bool(spec and spec.augment), self.options)

    # -- evaluation -----------------------------------------------------------------------------------------
    def eval_batches(self, batch_size: int, mesh) -> Iterator[tuple[jax.Array, jax.Array, jax.Array]]:
        """The whole test split in global batches of `batch_size`: (images uint8, labels, valid); the last batch
        is padded with repeats marked invalid."""
        n, local = len(self.test_records), _local_batch(batch_size)
        batches = -(-n // batch_size)
        rows = (np.arange(batches)[:, None] * batch_size + jax.process_index() * local + np.arange(local)).ravel()
        items = np.stack([rows % n, np.zeros_like(rows), rows], axis=1)
        valid = (rows < n).reshape(batches, local)
        with contextlib.closing(self._pipeline(items, self._example(None, train=False), local)) as pipeline:
            for (images, labels), ok in zip(pipeline, valid):
                yield _to_global(mesh, images), _to_global(mesh, labels), _to_global(mesh, ok)

    # -- Grain ----------------------------------------------------------------------------------------------
    def _pipeline(self, items: np.ndarray, example: _Example, batch: int):
        import grain
        dataset = grain.MapDataset.source(items).map(example).batch(batch, drop_remainder=True)
        threads = 0 if self.workers else min(16, os.cpu_count() or 1)
        stream = dataset.to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=4 * batch))
        if self.workers:
            _absl_flags_parsed()
            _quiet_resource_tracker()
            stream = stream.mp_prefetch(grain.MultiprocessingOptions(num_workers=self.workers),
                                        worker_init_fn=_exit_with_parent)
            return _workers_deaf_to_ctrl_c(stream)
        return iter(stream)


def _workers_deaf_to_ctrl_c(stream):
    """Yield from an iterator of the Grain dataset `stream` whose worker processes inherit a blocked SIGINT: they
    start with its first batch, from threads it starts then or when it is made, and a thread or process takes the
    signal mask of the thread that starts it. Ctrl-C signals the terminal's whole process group: workers that got
    it would each print a traceback (often from the middle of importing JAX); this process stops them as it ends."""
    import signal
    from multiprocessing import resource_tracker
    resource_tracker.ensure_running()   # starting it later, in a thread of Grain's, would unblock SIGINT there
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:  # a Ctrl-C now waits until the mask is restored: nothing is lost
        batches = iter(stream)
        first = next(batches, None)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    try:
        if first is not None:
            yield first
            yield from batches
    finally:
        batches.close()


def _exit_with_parent(worker_index: int, worker_count: int) -> None:
    """Grain worker init: a SIGKILLed run has no chance to stop its workers, and each holds its memory (~200 MB)
    until it is killed by hand. So every worker watches its parent and exits within a second of it."""
    import threading
    import time
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="elax-exit-with-parent", daemon=True).start()


def _local_batch(global_batch: int) -> int:
    processes = jax.process_count()
    if global_batch % processes:
        raise ValueError(f"The batch size {global_batch} must be divisible by the {processes} processes.")
    return global_batch // processes


def _to_global(mesh, local: np.ndarray) -> jax.Array:
    """One global array sharded over the mesh's batch axis from every process's rows."""
    return jax.make_array_from_process_local_data(NamedSharding(mesh, P("data")), local)


def _on_devices_ahead(batches, depth: int = 2):
    """Yield `batches` (already put on the devices, asynchronously) while the next `depth` are in transfer."""
    pending = collections.deque()
    with contextlib.closing(batches):
        for batch in batches:
            pending.append(batch)
            if len(pending) > depth:
                yield pending.popleft()
    yield from pending


def _quiet_resource_tracker() -> None:
    """Workers hand batches over in shared memory. Batches still prefetched when a pipeline is dropped are
    unlinked by Python's resource tracker at exit, which warns of 'leaked shared_memory objects' (Grain issue
    #398); nothing is left in /dev/shm, so that warning only alarms. The tracker is a process of its own that
    starts with this process's environment, hence PYTHONWARNINGS."""
    rule = "ignore:resource_tracker:UserWarning"
    current = os.environ.get("PYTHONWARNINGS", "")
    if rule not in current.split(","):
        os.environ["PYTHONWARNINGS"] = f"{current},{rule}" if current else rule


def _absl_flags_parsed() -> None:
    """Grain's worker pool reads absl flags; outside `main.py` (a notebook, pytest) nobody parsed them."""
    from absl import flags
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
