"""The datasets elax knows, in one place: their classes, the on-disk formats their files may be in, whether they
only stream, where a machine may already hold them and how to provide them; and the checks of `config.data`.

Light to import (no JAX, no dataset readers: a workdir's recipe asks it whether a run streams). A dataset of
your own is one `register(DatasetInfo(...))`; its formats are names of `elax.data.files.FORMATS` (files read into
memory) or of the streamed readers (`"tfds-array_record"`, `"imagefolder"`: `elax.data.records`).
"""

import dataclasses

from elax.config import ConfigError, check_stream_settings
from elax.registry import Registry

SOURCES = ("auto", "device", "stream")
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"


@dataclasses.dataclass(frozen=True)
class Download:
    """An official archive that `data.download` may fetch (`elax.data.download`)."""

    archive: str    # file name at the download base URL
    md5: str        # as published on the dataset's page
    folder: str     # the one folder the archive unpacks to


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int | None       # None: as many as its files have (an ImageFolder's class folders)
    formats: tuple[str, ...]      # how it may be stored, tried in order (module docstring)
    streamed_only: bool = False   # too large for memory, or encoded files: read by the streamed pipeline only
    system_dirs: tuple[str, ...] = ()   # where system packages install it
    advice: str = ""              # how to provide it
    download: Download | None = None   # what `data.download=True` fetches; None: elax cannot download it


DATASETS: Registry[DatasetInfo] = Registry("dataset")


def register(info: DatasetInfo) -> DatasetInfo:
    return DATASETS.register(info.name, info)


def get(name: str) -> DatasetInfo:
    return DATASETS.get(name)


def streams(source: str | None, name: str) -> bool:
    """Whether a run with `data.source` `source` (None: auto) reads dataset `name` through the streamed pipeline."""
    source = source or "auto"
    return source == "stream" or (source == "auto" and name in DATASETS and get(name).streamed_only)


def is_streamed(data_config) -> bool:
    """Whether a run's `config.data` streams its data."""
    return streams(data_config.get("source"), data_config.name)


def check_config(d) -> None:
    """ConfigError naming the first key of `config.data` that cannot work with its dataset."""
    if d.name not in DATASETS:
        raise ConfigError("data.name", DATASETS.unknown(d.name))
    info = get(d.name)
    if d.source not in SOURCES:
        raise ConfigError("data.source", f"unknown source {d.source!r}.", f"Valid: {', '.join(SOURCES)}.")
    if info.streamed_only and d.source == "device":
        raise ConfigError("data.source", f"{d.name} does not fit on a device.", "Use config.data.source=stream "
                          "(or auto).")
    for key, what in (("train_subset", "Leave it 0."),
                      ("pad_to", "Leave it 0 (its images are cropped to data.image_size).")):
        if d[key] and info.streamed_only:
            raise ConfigError(f"data.{key}", f"applies to datasets held in memory, not to {d.name}.", what)
    if d.get("download", False) and info.download is None:
        raise ConfigError("data.download", f"elax cannot download {d.name} (only {', '.join(downloadable())}).",
                          f"Set it False and provide the data: {info.advice or 'see elax.data.looks_for'}.")
    if is_streamed(d):
        check_stream_settings(d)


def downloadable() -> tuple[str, ...]:
    """The datasets `data.download=True` can fetch."""
    return tuple(name for name, info in DATASETS.items() if info.download is not None)


def _idx_advice(name: str, package: str) -> str:
    files = "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte"
    installed = f"run `apt-get install {package}` (it installs the IDX files where elax looks); or " if package else ""
    return (f"{installed}copy the four {name} IDX files ({files}; plain or .gz) into a folder and pass it as "
            "config.data.dir; or point config.data.dir at a prepared tensorflow_datasets data dir")


def _cifar_advice(name: str, archive: str, folder: str) -> str:
    return (f"download {archive} from {CIFAR_URL} on a machine with internet, extract it (it unpacks to "
            f"{folder}/), and pass config.data.dir=DIR (the folder holding {folder}, or that folder itself); or "
            f"point config.data.dir at a prepared tensorflow_datasets data dir (one containing "
            f"{name}/<version>/dataset_info.json); or set $ELAX_DATA_DIR; or let elax fetch {archive} "
            "(config.data.download=True)")


# The binary archives (elax's preferred format) and the MD5s published on CIFAR_URL.
register(DatasetInfo("cifar10", 10, ("cifar10-binary", "cifar10-python", "tfds"),
                     advice=_cifar_advice("cifar10", "cifar-10-binary.tar.gz", "cifar-10-batches-bin"),
                     download=Download("cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530",
                                       "cifar-10-batches-bin")))
register(DatasetInfo("cifar100", 100, ("cifar100-binary", "cifar100-python", "tfds"),
                     advice=_cifar_advice("cifar100", "cifar-100-binary.tar.gz", "cifar-100-binary"),
                     download=Download("cifar-100-binary.tar.gz", "03b5dce01913d631647c71ecec9e9cb8",
                                       "cifar-100-binary")))
register(DatasetInfo("mnist", 10, ("mnist-idx", "tfds"), system_dirs=("/usr/share/datasets/mnist",),
                     advice=_idx_advice("MNIST", "")))
register(DatasetInfo("fashion_mnist", 10, ("fashion_mnist-idx", "tfds"),
                     system_dirs=("/usr/share/datasets/fashion-mnist",),
                     advice=_idx_advice("Fashion-MNIST", "dataset-fashion-mnist")))
register(DatasetInfo("digits", 10, ("sklearn-digits",), advice="pip install scikit-learn"))
register(DatasetInfo("imagenet2012", 1000, ("tfds-array_record", "imagefolder"), streamed_only=True))
register(DatasetInfo("imagefolder", None, ("imagefolder",), streamed_only=True))
