"""On-disk formats of the datasets held in memory: how each is laid out (`FORMATS`) and read into uint8 arrays.
IDX (MNIST, Fashion-MNIST), the official CIFAR binary and python batches, scikit-learn's bundled digits; prepared
TensorFlow Datasets directories are read by `elax.data.datasets`.
"""

import os
from typing import Callable, NamedTuple

import numpy as np

from elax.registry import Registry


class DataNotFoundError(FileNotFoundError):
    """A dataset (or the given data dir) is not on disk; the message says where elax looked and how to provide it."""


def read_bytes(path: str) -> bytes:
    """Whole file contents, transparently gunzipped for `*.gz`."""
    if path.endswith(".gz"):
        import gzip
        import zlib

        try:
            with gzip.open(path, "rb") as f:
                return f.read()
        except (gzip.BadGzipFile, EOFError, zlib.error) as e:
            raise ValueError(f"{path}: damaged gzip file ({e}); replace it with a good copy.") from None
    with open(path, "rb") as f:
        return f.read()


# IDX type codes -> big-endian numpy dtypes (http://yann.lecun.com/exdb/mnist/).
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str) -> np.ndarray:
    """Parses one IDX file (optionally gzipped) into a native-endian numpy array."""
    buf = read_bytes(path)
    if len(buf) < 4 or buf[0] != 0 or buf[1] != 0 or buf[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic number {buf[:4].hex()!r})")
    ndim = buf[3]
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise ValueError(f"{path}: corrupt IDX file (truncated header)")
    shape = tuple(int(d) for d in np.frombuffer(buf, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[buf[2]])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(buf) != expected:
        raise ValueError(f"{path}: corrupt IDX file ({len(buf)} bytes, header {shape} implies {expected})")
    data = np.frombuffer(buf, dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def _read_idx_split(paths: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Reads an (images, labels) pair of IDX files into [N, H, W, 1] uint8 and labels."""
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"{paths[0]}: expected uint8 images [N, H, W], got {images.dtype} {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(f"{paths[1]}: expected {len(images)} labels, got shape {labels.shape}")
    return images[..., None], labels


def _chw_to_hwc(flat: np.ndarray) -> np.ndarray:
    """[N, 3072] CIFAR rows (channel-major) -> [N, 32, 32, 3]."""
    return np.ascontiguousarray(flat.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))


def _read_cifar_bin(paths: list[str], label_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    """Official CIFAR binary batches; the last label byte is the (fine) label."""
    record = label_bytes + 3072
    images, labels = [], []
    for path in paths:
        buf = np.frombuffer(read_bytes(path), np.uint8)
        if buf.size % record:
            raise ValueError(f"{path}: corrupt CIFAR binary file ({buf.size} bytes, not a multiple of {record}); "
                             "replace it with a good copy.")
        rows = buf.reshape(-1, record)
        _check_labels(rows[:, label_bytes - 1], path, classes=100 if label_bytes == 2 else 10)
        labels.append(rows[:, label_bytes - 1])
        images.append(_chw_to_hwc(rows[:, label_bytes:]))
    return np.concatenate(images), np.concatenate(labels)


# What the official CIFAR python batches pickle: dicts, lists, bytes, ints and numpy arrays. Nothing else may be
# loaded: an arbitrary pickle can run any code (e.g. a planted ./data/cifar-10-batches-py/data_batch_1).
_PICKLE_GLOBALS = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
                   ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
                   ("numpy._core.multiarray", "scalar"), ("numpy.core.numeric", "_frombuffer"),
                   ("numpy._core.numeric", "_frombuffer"), ("_codecs", "encode")}


def _safe_unpickle(buf: bytes, path: str):
    """Unpickle `buf` admitting only the types of the official CIFAR batches; ValueError naming `path` else."""
    import io
    import pickle

    class Restricted(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) in _PICKLE_GLOBALS:
                return super().find_class(module, name)
            raise pickle.UnpicklingError(f"refused to load {module}.{name}")

    try:
        return Restricted(io.BytesIO(buf), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise ValueError(f"{path}: not an official CIFAR python batch ({e}); elax only unpickles numpy arrays, "
                         "dicts, lists, bytes and numbers. Replace it with the official file, or use the "
                         "binary version (cifar-10-binary.tar.gz).") from None


def _read_cifar_py(paths: list[str], label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Official CIFAR python (pickled) batches, through a restricted unpickler."""
    images, labels = [], []
    for path in paths:
        batch = _safe_unpickle(read_bytes(path), path)
        if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
            raise ValueError(f"{path}: not an official CIFAR python batch (no {label_key!r} and b'data' entries).")
        data, batch_labels = np.asarray(batch[b"data"]), np.asarray(batch[label_key])
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(batch_labels) != len(data):
            raise ValueError(f"{path}: not an official CIFAR python batch (data {data.dtype} {data.shape}, "
                             f"{len(batch_labels)} labels; expected uint8 [N, 3072] and N labels). Replace it with "
                             "the official file.")
        _check_labels(batch_labels, path, classes=100 if label_key == b"fine_labels" else 10)
        images.append(_chw_to_hwc(data))
        labels.append(batch_labels)
    return np.concatenate(images), np.concatenate(labels)


def _check_labels(labels: np.ndarray, path: str, classes: int) -> None:
    """A label beyond the dataset's classes means a damaged or foreign file: name it, not just its folder."""
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise ValueError(f"{path}: labels outside [0, {classes}) (max {labels.max()}): not an official CIFAR "
                         "file, or damaged. Replace it with a good copy.")


def digits_table() -> tuple[np.ndarray, np.ndarray]:
    """(images [1797, 8, 8] float 0..16, targets) from the CSV that scikit-learn ships, read as
    `sklearn.datasets.load_digits` reads it, without importing scikit-learn (which takes seconds)."""
    import importlib.util
    spec = importlib.util.find_spec("sklearn")   # locates the package without importing it
    path = spec and os.path.join(spec.submodule_search_locations[0], "datasets", "data", "digits.csv.gz")
    if not path or not os.path.isfile(path):
        raise DataNotFoundError("The digits dataset comes with scikit-learn, which is not installed (or has no "
                                "datasets/data/digits.csv.gz): pip install scikit-learn.")
    table = np.loadtxt(path, delimiter=",")
    return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(int)


def read_digits() -> tuple[np.ndarray, ...]:
    """scikit-learn's 8x8 digits as uint8 [N, 8, 8, 1] with a fixed 1437/360 train/test split."""
    images, targets = digits_table()
    images = np.round(images * 255 / 16).astype(np.uint8)[..., None]
    order = np.random.default_rng(0).permutation(len(images))
    train, test = order[:-360], order[-360:]
    return images[train], targets[train], images[test], targets[test]


class Layout(NamedTuple):
    """A format of files in a folder: sub-folder names a data root may hold it in, files per split, reader."""

    kind: str
    folders: tuple[str, ...]
    train: tuple[str, ...]
    test: tuple[str, ...]
    read: Callable[[list[str]], tuple[np.ndarray, np.ndarray]]


class Bundled(NamedTuple):
    """A dataset that comes with a package: read() -> (train images, train labels, test images, test labels)."""

    kind: str
    read: Callable[[], tuple[np.ndarray, ...]]


class PreparedTFDS(NamedTuple):
    """A prepared tensorflow_datasets data dir (read by elax.data.datasets)."""

    kind: str = "tensorflow_datasets"


FORMATS: Registry = Registry("data format")
_CIFAR10_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
_IDX_FILES = dict(train=("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                  test=("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"), read=_read_idx_split)
FORMATS.register("cifar10-binary", Layout("CIFAR binary batch", ("cifar-10-batches-bin",),
                                          tuple(b + ".bin" for b in _CIFAR10_BATCHES), ("test_batch.bin",),
                                          lambda p: _read_cifar_bin(p, label_bytes=1)))
FORMATS.register("cifar10-python", Layout("CIFAR python batch", ("cifar-10-batches-py",), _CIFAR10_BATCHES,
                                          ("test_batch",), lambda p: _read_cifar_py(p, b"labels")))
FORMATS.register("cifar100-binary", Layout("CIFAR binary batch", ("cifar-100-binary",), ("train.bin",),
                                           ("test.bin",), lambda p: _read_cifar_bin(p, label_bytes=2)))
FORMATS.register("cifar100-python", Layout("CIFAR python batch", ("cifar-100-python",), ("train",), ("test",),
                                           lambda p: _read_cifar_py(p, b"fine_labels")))
FORMATS.register("mnist-idx", Layout("IDX", ("mnist",), **_IDX_FILES))
FORMATS.register("fashion_mnist-idx", Layout("IDX", ("fashion_mnist", "fashion-mnist"), **_IDX_FILES))
FORMATS.register("sklearn-digits", Bundled("sklearn.datasets.load_digits (bundled with scikit-learn)", read_digits))
FORMATS.register("tfds", PreparedTFDS())
