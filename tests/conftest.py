"""Shared fixtures: one initialised tiny ResNet (init compiles slowly on CPU) and a tiny synthetic dataset."""

import jax
import numpy as np
import pytest

from elax.data import Dataset
from elax.models import get_model, init_variables

TINY_SHAPE = (8, 8, 3)


def synthetic_dataset(num_train: int = 80, num_test: int = 13, seed: int = 0) -> Dataset:
    """Random uint8 8x8x3 images, 10 classes; test size not a multiple of small eval batches."""
    rng = np.random.default_rng(seed)
    images = lambda n: rng.integers(0, 256, (n, *TINY_SHAPE), dtype=np.uint8)
    labels = lambda n: rng.integers(0, 10, n).astype(np.int32)
    return Dataset(name="synthetic", train_images=images(num_train), train_labels=labels(num_train),
                   test_images=images(num_test), test_labels=labels(num_test), num_classes=10,
                   mean=(0.5, 0.45, 0.4), std=(0.29, 0.28, 0.3), source="synthetic")


@pytest.fixture(scope="session")
def tiny_dataset() -> Dataset:
    return synthetic_dataset()


@pytest.fixture(scope="session")
def resnet8_variables():
    """{'params', 'batch_stats'} of cifar_resnet_8_4 from init_variables(key 0) on 8x8x3 inputs."""
    return init_variables(get_model("cifar_resnet_8_4"), jax.random.key(0), TINY_SHAPE)
