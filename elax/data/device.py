"""The device-resident batch source: a small dataset kept on the devices as uint8 (replicated), each step's
batch gathered, augmented and normalised inside the jitted train step. The fast path for CIFAR and MNIST-sized
data; order and augmentation are functions of (seed, step) alone.
"""

import dataclasses

import flax
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from elax.data.augment import normalize, random_crop_flip


@dataclasses.dataclass(frozen=True)
class BatchSpec:
    """How a run reads its training data: what any batch source needs to produce the batch of a step."""

    seed: int
    batch_size: int
    steps_per_epoch: int
    augment: bool
    compute_dtype: object = jnp.float32

    def key(self, purpose: int):
        """The RNG stream of `purpose` (1: data order, 2: augmentation), derived from the seed alone."""
        return jax.random.fold_in(jax.random.key(self.seed), purpose)

    def epoch_order(self, epoch, n: int):
        """The order in which `epoch` reads the n training records: every source's, a function of seed and epoch."""
        return jax.random.permutation(jax.random.fold_in(self.key(1), epoch), n)


@flax.struct.dataclass
class DeviceSource:
    """A small dataset resident on the devices (replicated uint8); mean/std are compile-time constants."""

    train_images: jax.Array
    train_labels: jax.Array
    test_images: jax.Array
    test_labels: jax.Array
    mean: tuple = flax.struct.field(pytree_node=False)
    std: tuple = flax.struct.field(pytree_node=False)
    num_classes: int = flax.struct.field(pytree_node=False)

    @property
    def num_train(self) -> int:
        return int(self.train_labels.shape[0])

    @property
    def num_test(self) -> int:
        return int(self.test_labels.shape[0])

    @property
    def image_shape(self) -> tuple:
        return tuple(self.train_images.shape[1:])

    def describe(self) -> str:
        return "held on the devices (data.source=device)"

    def epoch_order(self, spec: BatchSpec, step):
        """The permutation of the training set that the epoch of `step` reads."""
        return spec.epoch_order(step // spec.steps_per_epoch, self.train_labels.shape[0])

    def train_batch(self, spec: BatchSpec, step, order):
        """The normalised (augmented) training batch of global `step`, whose epoch reads in `order`."""
        n = self.train_labels.shape[0]
        position = (step % spec.steps_per_epoch) * spec.batch_size
        # The last batch of an epoch wraps around to the epoch's first examples (static shapes).
        idx = order[(position + jnp.arange(spec.batch_size)) % n]
        images, labels = self.train_images[idx], self.train_labels[idx]
        if spec.augment:
            images = random_crop_flip(images, jax.random.fold_in(spec.key(2), step))
        return normalize(images, self.mean, self.std, spec.compute_dtype), labels


def put_on_devices(dataset, mesh) -> DeviceSource:
    """`dataset` (elax.data.Dataset) replicated on every device of `mesh`."""
    replicated = NamedSharding(mesh, P())
    put = lambda x: jax.device_put(np.asarray(x), replicated)
    return DeviceSource(put(dataset.train_images), put(dataset.train_labels.astype(np.int32)),
                        put(dataset.test_images), put(dataset.test_labels.astype(np.int32)),
                        tuple(dataset.mean), tuple(dataset.std), dataset.num_classes)
