"""Datasets and the batch sources that feed training.

- `datasets`: read a dataset from files on disk into host memory (`load`), never downloading.
- `augment`: on-device augmentation and normalisation (jit-able).
- `device`: the device-resident batch source (`DeviceSource`), the fast path for data that fits on a device.
- `stream`: the streamed batch source (`StreamSource`, Grain) for data that does not; `records` and `images`
  are its host side (random-access records; decoding and augmentation).

A batch source gives the trainer the normalised batch of any global step for a `BatchSpec` (seed, batch size,
steps per epoch, augmentation), so that order and augmentation are functions of (seed, step): a resumed run
reads exactly what an uninterrupted one would, and SNIP/GraSP score batches are the batches training sees.
"""

from elax.data.augment import normalize, random_crop, random_crop_flip, random_flip
from elax.data.datasets import (DATASETS, SOURCES, STREAMED_ONLY, Dataset, DataNotFoundError, is_streamed, load,
                                looks_for, pad_images, read_idx, synthetic, train_subset)
from elax.data.device import BatchSpec, DeviceSource, put_on_devices
from elax.data.stream import ImageOptions, StreamSource

__all__ = ["BatchSpec", "DATASETS", "DataNotFoundError", "Dataset", "DeviceSource", "ImageOptions", "SOURCES",
           "STREAMED_ONLY", "StreamSource", "is_streamed", "load", "looks_for", "normalize", "pad_images",
           "put_on_devices", "random_crop", "random_crop_flip", "random_flip", "read_idx", "synthetic", "train_subset"]
