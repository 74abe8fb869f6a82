"""The streamed batch source: for datasets that do not fit on a device (ImageNet), images are read, decoded and
augmented on the host by Grain (worker processes or threads), and each process feeds its share of every global
batch to its own devices (`jax.make_array_from_process_local_data`); normalisation runs on the device.

Order and augmentation are functions of (seed, step), as with `DeviceSource`: epoch e reads the same permutation
(`jax.random.permutation` of (seed, e)), the batch of step t holds positions t*B .. t*B+B-1 of it (the last batch
of an epoch wraps around), and example r of that batch is augmented with numpy's RNG seeded by (seed, t, r). So a
resumed run reads exactly what an uninterrupted one would, on any number of processes, and a small dataset read
through this path without augmentation gives exactly the device source's batches.

One Grain pipeline serves the training from the step it starts at for up to `SPAN_EPOCHS` epochs (its workers
receive those epochs' record indices, computed here); it is built again when a run jumps (resume, a new level at
the rewind step) or reaches the end of that span. The test split has one pipeline that repeats, kept between
evaluations: starting Grain's worker processes takes seconds (each imports JAX), which used to be paid every
epoch and every evaluation. While the device runs a step, the host keeps the next two batches on their way to
the devices (jitted steps and device puts are asynchronous), while Grain's workers decode the ones after them.
Pipelines are closed in this process, by `StreamSource.close` (at the end of a run) or at exit, never left to
Grain's finalizers, which race with Grain's own threads.
"""

import atexit
import collections
import contextlib
import dataclasses
import functools
import os
import weakref
from typing import Any, Iterator

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from elax.data import images as image_ops

# A training pipeline covers at most this many epochs and examples of this process (its record indices are
# pickled into every worker: an ImageNet epoch is one span, a CIFAR-size dataset spans several epochs).
SPAN_EPOCHS = 16
SPAN_EXAMPLES = 2**18


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
        self._cursor = None   # (next step, end of its span, batches) of the training pipeline in use
        self._eval = None     # (batch size, batches) of the test split's repeating pipeline
        _OPEN.add(self)

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

    def close(self) -> None:
        """Stop the pipelines kept between calls (and their worker processes); the next call starts new ones."""
        self.close_training()
        self._close_eval()

    # -- training -------------------------------------------------------------------------------------------
    def train_batches(self, spec, step: int, num_steps: int, mesh) -> Iterator[tuple[jax.Array, jax.Array]]:
        """The global (images uint8, labels) of steps step .. step+num_steps-1 (within one epoch)."""
        next_step, stop, batches = self._cursor or (None, None, None)
        if next_step != step or step + num_steps > stop:  # a jump, or the span is used up
            self.close_training()
            stop = _span_end(spec, step)
            batches = _on_devices_ahead(self._span_batches(spec, step, stop, mesh))
            self._cursor = (step, stop, batches)   # closed by the next jump even if this call is cut short
        for _ in range(num_steps):
            yield next(batches)
        self._cursor = (step + num_steps, stop, batches)

    def close_training(self) -> None:
        """Stop the training pipeline in use, in this thread (its Grain threads and workers)."""
        cursor, self._cursor = self._cursor, None
        if cursor:
            cursor[2].close()

    def host_batch(self, spec, step: int) -> tuple[np.ndarray, np.ndarray]:
        """This process's share of the batch of `step` as numpy (uint8 images, labels); no workers."""
        example = self._example(spec, train=True)
        examples = [example(item) for item in self._train_items(spec, step, step + 1)]
        return np.stack([e[0] for e in examples]), np.stack([e[1] for e in examples])

    def _span_batches(self, spec, step: int, stop: int, mesh):
        items = self._train_items(spec, step, stop)
        # Grain iterators are closed here, in this thread: left to the garbage collector, one may be closed from
        # one of its own prefetch threads, which fails.
        with contextlib.closing(self._pipeline(items, self._example(spec, train=True),
                                               _local_batch(spec.batch_size))) as it:
            for images, labels in it:
                yield _to_global(mesh, images), _to_global(mesh, labels)

    def _train_items(self, spec, start: int, stop: int) -> np.ndarray:
        """(record, step, row) of this process's examples of steps start..stop-1."""
        n, local = self.num_train, _local_batch(spec.batch_size)
        steps = np.repeat(np.arange(start, stop), local)
        rows = np.tile(jax.process_index() * local + np.arange(local), stop - start)
        epochs = steps // spec.steps_per_epoch
        first = start // spec.steps_per_epoch
        orders = np.stack([np.asarray(spec.epoch_order(epoch, n)) for epoch in range(first, int(epochs[-1]) + 1)])
        positions = (steps % spec.steps_per_epoch) * spec.batch_size + rows
        return np.stack([orders[epochs - first, positions % n], steps, rows], axis=1)

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
        valid = (rows < n).reshape(batches, local)
        if self._eval is None or self._eval[0] != batch_size:
            self._close_eval()
            items = np.stack([rows % n, np.zeros_like(rows), rows], axis=1)
            self._eval = (batch_size, self._pipeline(items, self._example(None, train=False), local, repeat=True))
        pipeline = self._eval[1]
        try:
            for ok in valid:
                images, labels = next(pipeline)
                yield _to_global(mesh, images), _to_global(mesh, labels), _to_global(mesh, ok)
        except BaseException:  # an evaluation cut short (a damaged image, Ctrl-C): the next one starts afresh
            self._close_eval()
            raise

    def _close_eval(self) -> None:
        evaluation, self._eval = self._eval, None
        if evaluation:
            evaluation[1].close()

    # -- Grain ----------------------------------------------------------------------------------------------
    def _pipeline(self, items: np.ndarray, example: _Example, batch: int, repeat: bool = False):
        """Batches of `example` over `items` (over and over if `repeat`), as a closable iterator."""
        import grain
        _close_at_exit()
        dataset = grain.MapDataset.source(items).map(example).batch(batch, drop_remainder=True)
        if repeat:
            dataset = dataset.repeat()
        threads = 0 if self.workers else min(16, os.cpu_count() or 1)
        # The buffer counts elements, here whole batches: two per thread keep every thread busy, and a repeating
        # evaluation pipeline does not decode far ahead of what it is asked for.
        buffer = 2 * max(1, threads)
        stream = dataset.to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=buffer))
        if self.workers:
            _absl_flags_parsed()
            _quiet_resource_tracker()
            stream = stream.mp_prefetch(grain.MultiprocessingOptions(num_workers=self.workers),
                                        worker_init_fn=functools.partial(_exit_with_parent, parent=os.getpid()))
            return _workers_deaf_to_ctrl_c(stream)
        return iter(stream)


def _span_end(spec, step: int) -> int:
    """The step after the last of the training pipeline that starts at `step`: the end of an epoch."""
    per_epoch = spec.steps_per_epoch * _local_batch(spec.batch_size)
    epochs = min(SPAN_EPOCHS, max(1, SPAN_EXAMPLES // per_epoch))
    return (step // spec.steps_per_epoch + epochs) * spec.steps_per_epoch


# Every StreamSource, to close their pipelines before Python's exit runs Grain's finalizers.
_OPEN = weakref.WeakSet()


@functools.cache
def _close_at_exit() -> None:
    """Close every source's pipelines at exit, before multiprocessing's finalizers (registered earlier, so run
    later) would close them while Grain's threads still use them: a traceback after the run's last line."""
    atexit.register(lambda: [source.close() for source in list(_OPEN)])


def _workers_deaf_to_ctrl_c(stream):
    """Yield from an iterator of the Grain dataset `stream` whose worker processes inherit a blocked SIGINT: they
    start with its first batch, from threads it starts then or when it is made, and a thread or process takes the
    signal mask of the thread that starts it. Ctrl-C signals the terminal's whole process group: workers that got
    it would each print a traceback (often from the middle of importing JAX); this process stops them as it ends."""
    import signal
    from multiprocessing import resource_tracker
    resource_tracker.ensure_running()   # starting it later, in a thread of Grain's, would unblock SIGINT there
    batches = None
    try:  # closed however it ends, a failing first batch (a damaged image) included
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:  # a Ctrl-C now waits until the mask is restored: nothing is lost
            batches = iter(stream)
            first = next(batches, None)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        if first is not None:
            yield first
            yield from batches
    finally:
        if batches is not None:
            batches.close()


def _exit_with_parent(worker_index: int, worker_count: int, parent: int) -> None:
    """Grain worker init: a SIGKILLed run has no chance to stop its workers, and each holds its memory (~200 MB)
    until it is killed by hand. So every worker watches its parent (`parent`, the pid of the process that made
    the pipeline: a worker that starts after its parent died has another parent already) and exits within a
    second of it."""
    import threading
    import time
    if os.getppid() != parent:
        os._exit(0)

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
