"""Datasets and the batch sources that feed training.

- `catalog`: the datasets elax knows (classes, formats, whether they stream) and the checks of `config.data`.
- `files`, `datasets`: read a dataset from files on disk into host memory (`load`); `download` fetches CIFAR
  when asked (`data.download`), never otherwise.
- `augment`: on-device augmentation and normalisation (jit-able).
- `device`: the device-resident batch source (`DeviceSource`), the fast path for data that fits on a device.
- `stream`: the streamed batch source (`StreamSource`, Grain) for data that does not; `records` and `images`
  are its host side (random-access records; decoding and augmentation).

A batch source gives the trainer the normalised batch of any global step for a `BatchSpec` (seed, batch size,
steps per epoch, augmentation), so that order and augmentation are functions of (seed, step): a resumed run
reads exactly what an uninterrupted one would, and SNIP/GraSP score batches are the batches training sees.

Names are imported on first use: `elax.data.catalog` is read by the workdir's recipe, which must not import JAX.
"""

import importlib
import pkgutil

_HOMES = {
    "catalog": ("DatasetInfo", "SOURCES", "check_config", "is_streamed", "register", "streams"),
    "files": ("DataNotFoundError", "read_idx"),
    "datasets": ("Dataset", "load", "looks_for", "pad_images", "synthetic", "train_subset"),
    "augment": ("normalize", "random_crop", "random_crop_flip", "random_flip"),
    "device": ("BatchSpec", "DeviceSource", "put_on_devices"),
    "stream": ("ImageOptions", "StreamSource"),
}
_MODULE_OF = {name: module for module, names in _HOMES.items() for name in names}

_SUBMODULES = tuple(module.name for module in pkgutil.iter_modules(__path__))
__all__ = sorted(_MODULE_OF)


def __getattr__(name):
    if name in _MODULE_OF:
        return getattr(importlib.import_module(f"elax.data.{_MODULE_OF[name]}"), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"elax.data.{name}")
    raise AttributeError(f"module 'elax.data' has no attribute {name!r}")
