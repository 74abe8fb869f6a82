"""Datasets as uint8 numpy arrays, plus jit-able on-device augmentation.

Loading never touches the network: each dataset is read from files already on
disk (official CIFAR batches, IDX files, or a prepared tensorflow_datasets
folder), or from scikit-learn's bundled `digits`. Missing data fails fast with
a `DataNotFoundError` that lists every place looked and how to provide it.
"""

import dataclasses
import glob
import os
from typing import Callable, NamedTuple

import numpy as np

from elax.workdir import STREAMED_DATASETS, streams

_NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "mnist": 10, "fashion_mnist": 10, "digits": 10}
DATASETS = tuple(_NUM_CLASSES)
# Datasets read through the streamed input pipeline only (too large to hold in memory, or folders of files).
STREAMED_ONLY = STREAMED_DATASETS
SOURCES = ("auto", "device", "stream")


def is_streamed(data_config) -> bool:
    """Whether a run's `config.data` streams its data (`data.source`, auto: the STREAMED_ONLY datasets)."""
    return streams(data_config.get("source"), data_config.name)

# Debian packages install IDX files here (e.g. `dataset-fashion-mnist`).
_SYSTEM_DIRS = {
    "mnist": ("/usr/share/datasets/mnist",),
    "fashion_mnist": ("/usr/share/datasets/fashion-mnist",),
}

_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"

_ADVICE = {
    "cifar10": (
        f"download cifar-10-binary.tar.gz from {_CIFAR_URL} on a machine with internet, "
        "extract it (it unpacks to cifar-10-batches-bin/), and pass --config.data.dir=DIR "
        "(the folder holding cifar-10-batches-bin, or that folder itself); or point "
        "--config.data.dir at a prepared tensorflow_datasets data dir (one containing "
        "cifar10/<version>/dataset_info.json); or set $ELAX_DATA_DIR"
    ),
    "cifar100": (
        f"download cifar-100-binary.tar.gz from {_CIFAR_URL} on a machine with internet, "
        "extract it (it unpacks to cifar-100-binary/), and pass --config.data.dir=DIR "
        "(the folder holding cifar-100-binary, or that folder itself); or point "
        "--config.data.dir at a prepared tensorflow_datasets data dir (one containing "
        "cifar100/<version>/dataset_info.json); or set $ELAX_DATA_DIR"
    ),
    "mnist": (
        "copy the four MNIST IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte, "
        "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte; plain or .gz) into a folder and "
        "pass --config.data.dir=DIR (or put them in /usr/share/datasets/mnist); or point "
        "--config.data.dir at a prepared tensorflow_datasets data dir"
    ),
    "fashion_mnist": (
        "run `apt-get install dataset-fashion-mnist` (installs the IDX files into "
        "/usr/share/datasets/fashion-mnist); or copy the four Fashion-MNIST IDX files "
        "(train-images-idx3-ubyte, ..., plain or .gz) into a folder and pass "
        "--config.data.dir=DIR; or point --config.data.dir at a prepared "
        "tensorflow_datasets data dir"
    ),
}


class DataNotFoundError(FileNotFoundError):
    """A dataset (or the given data dir) is not on disk; the message says where we looked."""


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A dataset held in host memory as uint8 images [N, H, W, C] and int32 labels."""

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str


# ----------------------------------------------------------------------------
# File formats.


def _read_bytes(path: str) -> bytes:
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
    buf = _read_bytes(path)
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
        raise ValueError(
            f"{path}: corrupt IDX file ({len(buf)} bytes, header {shape} implies {expected})"
        )
    data = np.frombuffer(buf, dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def _read_idx_split(paths: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Reads an (images, labels) pair of IDX files into [N, H, W, 1] uint8 and labels."""
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(
            f"{paths[0]}: expected uint8 images [N, H, W], got {images.dtype} {images.shape}"
        )
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
        buf = np.frombuffer(_read_bytes(path), np.uint8)
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
        batch = _safe_unpickle(_read_bytes(path), path)
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


class _Layout(NamedTuple):
    """How one on-disk format is laid out: sub-folder names, files per split, reader."""

    kind: str
    folders: tuple[str, ...]
    train: tuple[str, ...]
    test: tuple[str, ...]
    read: Callable[[list[str]], tuple[np.ndarray, np.ndarray]]


def _cifar_layouts(name: str) -> tuple[_Layout, ...]:
    if name == "cifar10":
        batches = tuple(f"data_batch_{i}" for i in range(1, 6))
        binary = _Layout(
            "CIFAR binary batch", ("cifar-10-batches-bin",), tuple(b + ".bin" for b in batches),
            ("test_batch.bin",), lambda p: _read_cifar_bin(p, label_bytes=1),
        )
        python = _Layout(
            "CIFAR python batch", ("cifar-10-batches-py",), batches, ("test_batch",),
            lambda p: _read_cifar_py(p, b"labels"),
        )
        return binary, python
    binary = _Layout(
        "CIFAR binary batch", ("cifar-100-binary",), ("train.bin",), ("test.bin",),
        lambda p: _read_cifar_bin(p, label_bytes=2),
    )
    python = _Layout(
        "CIFAR python batch", ("cifar-100-python",), ("train",), ("test",),
        lambda p: _read_cifar_py(p, b"fine_labels"),
    )
    return binary, python


def _idx_layout(name: str) -> _Layout:
    folders = ("mnist",) if name == "mnist" else ("fashion_mnist", "fashion-mnist")
    return _Layout("IDX", folders, ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                   ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"), _read_idx_split)


def _layouts(name: str) -> tuple[_Layout, ...]:
    return _cifar_layouts(name) if name.startswith("cifar") else (_idx_layout(name),)


# ----------------------------------------------------------------------------
# Where to look.


def default_roots() -> list[str]:
    """Default data roots, read at call time so $ELAX_DATA_DIR / $HOME changes apply."""
    roots = [os.environ["ELAX_DATA_DIR"]] if os.environ.get("ELAX_DATA_DIR") else []
    roots += ["~/tensorflow_datasets", "~/.elax/data", os.path.join(os.getcwd(), "data")]
    return [os.path.abspath(os.path.expanduser(r)) for r in roots]


def _candidates(name: str, data_dir: str | None) -> list[tuple[_Layout | None, str]]:
    """(layout, dir) pairs to try in order; layout None means a TFDS data dir."""
    if data_dir is not None:
        root = os.path.abspath(os.path.expanduser(data_dir))
        if not os.path.isdir(root):
            raise DataNotFoundError(f"data dir {data_dir!r} does not exist (or is not a directory)")
        return _root_candidates(name, root, itself=True)
    out = []
    for root in default_roots():
        out += _root_candidates(name, root, itself=False)
    out += [(layout, d) for layout in _layouts(name) for d in _SYSTEM_DIRS.get(name, ())]
    return out


def _root_candidates(name: str, root: str, itself: bool) -> list[tuple[_Layout | None, str]]:
    # An explicit data dir may be the official folder itself, not just its parent.
    out = []
    for layout in _layouts(name):
        out += [(layout, root)] if itself else []
        out += [(layout, os.path.join(root, f)) for f in layout.folders]
    return out + [(None, root)]


def looks_for(name: str, data_dir: str | None = None) -> list[str]:
    """Human-readable list of the places `load(name, data_dir)` looks, in order."""
    _check_name(name)
    if name == "digits":
        return ["sklearn.datasets.load_digits (bundled with scikit-learn)"]
    return [_describe(layout, d, name) for layout, d in _candidates(name, data_dir)]


def _describe(layout: _Layout | None, d: str, name: str) -> str:
    if layout is None:
        return f"{os.path.join(d, name, '<version>', 'dataset_info.json')} (tensorflow_datasets)"
    return f"{d} ({layout.kind} files)"


def _resolve(d: str, fname: str) -> str | None:
    """Path of `fname` in `d`, accepting a gzipped copy."""
    for path in (os.path.join(d, fname), os.path.join(d, fname + ".gz")):
        if os.path.isfile(path):
            return path
    return None


def _split_paths(layout: _Layout, d: str) -> tuple[list[str], list[str]] | None:
    """(train paths, test paths) if every file of `layout` is in `d`, None if none is; some but not all is an
    incomplete copy, named."""
    names = layout.train + layout.test
    paths = [_resolve(d, f) for f in names]
    if not os.path.isdir(d) or not any(paths):
        return None
    missing = [name for name, path in zip(names, paths) if path is None]
    if missing:
        raise DataNotFoundError(f"{d} lacks {', '.join(missing)} of the {len(names)} {layout.kind} files: an "
                                "incomplete copy. Copy or extract the missing files again.")
    return paths[: len(layout.train)], paths[len(layout.train):]


def _tfds_version(root: str, name: str) -> str | None:
    """Newest prepared TFDS version of `name` under `root`, if any."""
    infos = glob.glob(os.path.join(glob.escape(root), name, "*", "dataset_info.json"))
    versions = [os.path.basename(os.path.dirname(p)) for p in infos]
    return max(versions, key=_version_key, default=None)


def _version_key(version: str) -> tuple:
    return tuple(int(p) if p.isdigit() else -1 for p in version.split("."))


# ----------------------------------------------------------------------------
# Loading.


def _read_tfds(name: str, data_dir: str, version: str | None = None) -> tuple[np.ndarray, ...]:
    """(train_x, train_y, test_x, test_y) from a prepared TFDS dir, never downloading."""
    import tensorflow_datasets as tfds

    spec = f"{name}:{version}" if version else name
    try:
        return _read_tfds_splits(tfds, spec, data_dir)
    except (ValueError, FileNotFoundError):
        raise
    except Exception as e:  # TFDS raises many types for a damaged prepared dataset: name it, in one line
        text = " ".join(str(e).split())[:200]
        raise ValueError(f"the prepared TFDS dataset {spec} in {data_dir} cannot be read ({type(e).__name__}: "
                         f"{text}); prepare it again (`tfds build {name}`) or point data.dir elsewhere.") from None


def _read_tfds_splits(tfds, spec: str, data_dir: str) -> tuple[np.ndarray, ...]:
    arrays = []
    for split in ("train", "test"):
        # Split named explicitly: a mocked/metadata-less builder knows no splits.
        source = tfds.data_source(spec, split=split, data_dir=data_dir, download=False)
        # Plain iteration: one record at a time works on every data source.
        records = list(source)
        arrays.append(np.stack([np.asarray(r["image"], np.uint8) for r in records]))
        arrays.append(np.array([int(r["label"]) for r in records]))
    return tuple(arrays)


def _load_digits() -> tuple[np.ndarray, ...]:
    """scikit-learn's 8x8 digits with a fixed 1437/360 train/test split."""
    images, targets = _read_digits()
    images = np.round(images * 255 / 16).astype(np.uint8)[..., None]
    order = np.random.default_rng(0).permutation(len(images))
    train, test = order[:-360], order[-360:]
    return images[train], targets[train], images[test], targets[test]


def _read_digits() -> tuple[np.ndarray, np.ndarray]:
    """(images [1797, 8, 8] float 0..16, targets) from the CSV that scikit-learn ships, read as
    `sklearn.datasets.load_digits` reads it, without importing scikit-learn (1.6 s of a small run's start)."""
    import importlib.util
    spec = importlib.util.find_spec("sklearn")   # locates the package without importing it
    path = spec and os.path.join(spec.submodule_search_locations[0], "datasets", "data", "digits.csv.gz")
    if not path or not os.path.isfile(path):
        raise DataNotFoundError("The digits dataset comes with scikit-learn, which is not installed (or has no "
                                "datasets/data/digits.csv.gz): pip install scikit-learn.")
    table = np.loadtxt(path, delimiter=",")
    return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(int)


def _channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean/std of images/255, via a 256-bin histogram to avoid a float copy."""
    means, stds = [], []
    values = np.arange(256) / 255.0
    for c in range(images.shape[-1]):
        counts = np.bincount(images[..., c].ravel(), minlength=256)
        p = counts / counts.sum()
        mean = float(p @ values)
        means.append(mean)
        stds.append(float(np.sqrt(max(p @ (values - mean) ** 2, 0.0))))
    return tuple(means), tuple(stds)


def _make_dataset(name: str, arrays: tuple[np.ndarray, ...], source: str) -> Dataset:
    train_x, train_y, test_x, test_y = arrays
    train_y, test_y = np.asarray(train_y, np.int32), np.asarray(test_y, np.int32)
    num_classes = _NUM_CLASSES[name]
    for split, x, y in (("train", train_x, train_y), ("test", test_x, test_y)):
        if len(x) != len(y) or x.dtype != np.uint8 or x.ndim != 4:
            raise ValueError(
                f"{name} {split} from {source}: bad arrays {x.dtype} {x.shape} / {y.shape}"
            )
        if not len(x):
            raise ValueError(f"{name} {split} from {source}: the split holds no images (empty files?). Replace "
                             "them with good copies.")
        if y.min() < 0 or y.max() >= num_classes:
            raise ValueError(f"{name} {split} from {source}: labels outside [0, {num_classes})")
    mean, std = _channel_stats(train_x)
    if 0.0 in std:  # normalising would divide by zero and the first step would be NaN
        raise ValueError(f"{name} train from {source}: colour channel {std.index(0.0)} has the same value in every "
                         "image, so it cannot be normalised: the files are damaged or not this dataset.")
    return Dataset(name, train_x, train_y, test_x, test_y, num_classes, mean, std, source)


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")


def load(name: str, data_dir: str | None = None) -> Dataset:
    """Loads dataset `name` from `data_dir` (or the default places) into host memory."""
    _check_name(name)
    if name == "digits":
        return _make_dataset(name, _load_digits(), "sklearn")
    candidates = _candidates(name, data_dir)
    for layout, d in candidates:
        if layout is None:
            version = _tfds_version(d, name)
            if version is not None:
                return _make_dataset(name, _read_tfds(name, d, version), f"tfds:{d}")
            continue
        paths = _split_paths(layout, d)
        if paths is not None:
            arrays = layout.read(paths[0]) + layout.read(paths[1])
            return _make_dataset(name, arrays, d)
    looked = "\n".join(f"  - {_describe(layout, d, name)}" for layout, d in candidates)
    raise DataNotFoundError(
        f"dataset {name!r} not found. Looked in:\n{looked}\nTo provide it: {_ADVICE[name]}."
    )


def train_subset(dataset: Dataset, size: int) -> Dataset:
    """`dataset` with its training split cut to `size` examples: the first `size` of a fixed permutation (the
    same for every seed, so replicates train on the same images). 0 keeps the whole split; normalisation
    statistics stay those of the whole split."""
    n = len(dataset.train_labels)
    if not size or size == n:
        return dataset
    if not 0 < size <= n:
        raise ValueError(f"config.data.train_subset={size}: {dataset.name} has {n} training images; use 1..{n} "
                         "(or 0 for all).")
    keep = np.sort(np.random.default_rng(0).permutation(n)[:size])
    return dataclasses.replace(dataset, train_images=dataset.train_images[keep],
                               train_labels=dataset.train_labels[keep])


def pad_images(dataset: Dataset, side: int) -> Dataset:
    """`dataset` with every image zero-padded (black borders, centred) to `side` x `side`, as LeNet fed 28x28
    digits to a 32x32 network; the normalisation statistics become those of the padded images. 0 keeps it."""
    height, width = dataset.train_images.shape[1:3]
    if not side or (height, width) == (side, side):
        return dataset
    if side < max(height, width):
        raise ValueError(f"config.data.pad_to={side}: {dataset.name} has {height}x{width} images, larger than "
                         f"that; use 0 (as they are) or at least {max(height, width)}.")
    top, left = (side - height) // 2, (side - width) // 2
    widths = ((0, 0), (top, side - height - top), (left, side - width - left), (0, 0))
    train, test = np.pad(dataset.train_images, widths), np.pad(dataset.test_images, widths)
    mean, std = _channel_stats(train)
    return dataclasses.replace(dataset, train_images=train, test_images=test, mean=mean, std=std)


def synthetic(num_train: int, num_test: int, image_shape: tuple, *, num_classes: int = 10, seed: int = 0,
              mean: tuple = (0.5, 0.45, 0.4), std: tuple = (0.29, 0.28, 0.3)) -> Dataset:
    """Random uint8 images and labels: the fake data of tests and benchmarks (speed ignores pixel values)."""
    rng = np.random.default_rng(seed)
    images = lambda n: rng.integers(0, 256, (n, *image_shape), dtype=np.uint8)
    labels = lambda n: rng.integers(0, num_classes, n).astype(np.int32)
    return Dataset(name="synthetic", train_images=images(num_train), train_labels=labels(num_train),
                   test_images=images(num_test), test_labels=labels(num_test), num_classes=num_classes,
                   mean=tuple(mean), std=tuple(std), source="synthetic")
