"""Datasets held in host memory as uint8 numpy arrays: where to look for them (`looks_for`), reading them
(`load`), and the fixed subsets and padding a recipe may ask for.

Loading never touches the network unless asked (`load(..., download=True)`, `elax.data.download`): each dataset
is read from files already on disk in one of its formats (`elax.data.files`, `elax.data.catalog`), or from a
package that bundles it. Missing data fails fast with a `DataNotFoundError` that lists every place looked and how
to provide it.
"""

import dataclasses
import glob
import os

import numpy as np

from elax.data import catalog
from elax.data.files import FORMATS, Bundled, DataNotFoundError, Layout, PreparedTFDS


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


# -- where to look ---------------------------------------------------------------------------------------------------

def default_roots() -> list[str]:
    """Default data roots, read at call time so $ELAX_DATA_DIR / $HOME changes apply."""
    roots = [os.environ["ELAX_DATA_DIR"]] if os.environ.get("ELAX_DATA_DIR") else []
    roots += ["~/tensorflow_datasets", "~/.elax/data", os.path.join(os.getcwd(), "data")]
    return [os.path.abspath(os.path.expanduser(r)) for r in roots]


def download_root(data_dir: str | None = None) -> str:
    """Where `load(..., download=True)` puts a dataset: `data_dir`, else $ELAX_DATA_DIR, else ~/.elax/data (default
    roots, so later loads find it; ~/tensorflow_datasets is left to TFDS)."""
    root = data_dir or os.environ.get("ELAX_DATA_DIR") or "~/.elax/data"
    return os.path.abspath(os.path.expanduser(root))


def tfds_version(root: str, name: str) -> str | None:
    """Newest version of `name` prepared by tensorflow_datasets under `root`, if any."""
    infos = glob.glob(os.path.join(glob.escape(root), name, "*", "dataset_info.json"))
    versions = [os.path.basename(os.path.dirname(p)) for p in infos]
    return max(versions, key=_version_key, default=None)


def _version_key(version: str) -> tuple:
    return tuple(int(p) if p.isdigit() else -1 for p in version.split("."))


def _formats(name: str) -> list:
    return [FORMATS.get(f) for f in catalog.get(name).formats]


def _candidates(name: str, data_dir: str | None) -> list[tuple[object, str]]:
    """(format, dir) pairs to try in order."""
    if data_dir is not None:
        root = os.path.abspath(os.path.expanduser(data_dir))
        if not os.path.isdir(root):
            raise DataNotFoundError(f"data dir {data_dir!r} does not exist (or is not a directory)")
        return _root_candidates(name, root, itself=True)
    out = []
    for root in default_roots():
        out += _root_candidates(name, root, itself=False)
    return out + [(f, d) for f in _formats(name) if isinstance(f, Layout) for d in catalog.get(name).system_dirs]


def _root_candidates(name: str, root: str, itself: bool) -> list[tuple[object, str]]:
    # An explicit data dir may be the official folder itself, not just its parent.
    out = []
    for f in _formats(name):
        if isinstance(f, Layout):
            out += ([(f, root)] if itself else []) + [(f, os.path.join(root, folder)) for folder in f.folders]
        elif isinstance(f, PreparedTFDS):
            out.append((f, root))
    return out


def looks_for(name: str, data_dir: str | None = None) -> list[str]:
    """Human-readable list of the places `load(name, data_dir)` looks, in order."""
    _check_name(name)
    bundled = [f for f in _formats(name) if isinstance(f, Bundled)]
    if bundled:
        return [bundled[0].kind]
    return [_describe(f, d, name) for f, d in _candidates(name, data_dir)]


def _describe(f, d: str, name: str) -> str:
    if isinstance(f, PreparedTFDS):
        return f"{os.path.join(d, name, '<version>', 'dataset_info.json')} (tensorflow_datasets)"
    return f"{d} ({f.kind} files)"


def _resolve(d: str, fname: str) -> str | None:
    """Path of `fname` in `d`, accepting a gzipped copy."""
    for path in (os.path.join(d, fname), os.path.join(d, fname + ".gz")):
        if os.path.isfile(path):
            return path
    return None


def _split_paths(layout: Layout, d: str) -> tuple[list[str], list[str]] | None:
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


# -- loading ---------------------------------------------------------------------------------------------------------

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


def _channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean/std of images/255, via a 256-bin histogram to avoid a float copy."""
    means, stds = [], []
    values = np.arange(256) / 255.0
    # ~1M pixels at a time: bincount widens its input to int64, and that copy of a whole split is slow to allocate.
    rows = max(1, (1 << 20) // max(1, int(np.prod(images.shape[1:-1]))))
    for c in range(images.shape[-1]):
        counts = sum(np.bincount(images[i:i + rows, ..., c].ravel(), minlength=256)
                     for i in range(0, len(images), rows))
        p = counts / counts.sum()
        mean = float(p @ values)
        means.append(mean)
        stds.append(float(np.sqrt(max(p @ (values - mean) ** 2, 0.0))))
    return tuple(means), tuple(stds)


def _make_dataset(name: str, arrays: tuple[np.ndarray, ...], source: str) -> Dataset:
    train_x, train_y, test_x, test_y = arrays
    train_y, test_y = np.asarray(train_y, np.int32), np.asarray(test_y, np.int32)
    num_classes = catalog.get(name).num_classes
    for split, x, y in (("train", train_x, train_y), ("test", test_x, test_y)):
        if len(x) != len(y) or x.dtype != np.uint8 or x.ndim != 4:
            raise ValueError(f"{name} {split} from {source}: bad arrays {x.dtype} {x.shape} / {y.shape}")
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
    if name not in catalog.DATASETS:
        raise ValueError(catalog.DATASETS.unknown(name))
    if catalog.get(name).streamed_only:
        raise ValueError(f"{name} is not held in memory: it is read by the streamed pipeline "
                         "(elax.data.records.open_splits).")


def load(name: str, data_dir: str | None = None, download: bool = False) -> Dataset:
    """Loads dataset `name` from `data_dir` (or the default places) into host memory. `download`: when it is not
    on disk, first fetch its official archive into `download_root(data_dir)` (`elax.data.download.fetch`)."""
    _check_name(name)
    bundled = [f for f in _formats(name) if isinstance(f, Bundled)]
    if bundled:
        return _make_dataset(name, bundled[0].read(), "sklearn")
    try:
        return _load_files(name, data_dir)
    except DataNotFoundError:
        if not (download and catalog.get(name).download):
            raise
    from elax.data.download import fetch   # urllib and tarfile only when asked

    fetch(name, download_root(data_dir))
    return _load_files(name, data_dir)


def _load_files(name: str, data_dir: str | None) -> Dataset:
    candidates = _candidates(name, data_dir)
    for f, d in candidates:
        if isinstance(f, PreparedTFDS):
            version = tfds_version(d, name)
            if version is not None:
                return _make_dataset(name, _read_tfds(name, d, version), f"tfds:{d}")
            continue
        paths = _split_paths(f, d)
        if paths is not None:
            return _make_dataset(name, f.read(paths[0]) + f.read(paths[1]), d)
    looked = "\n".join(f"  - {_describe(f, d, name)}" for f, d in candidates)
    raise DataNotFoundError(
        f"dataset {name!r} not found. Looked in:\n{looked}\nTo provide it: {catalog.get(name).advice}.")


def train_subset(dataset: Dataset, size: int) -> Dataset:
    """`dataset` with its training split cut to `size` examples: the first `size` of a fixed permutation (the
    same for every seed, so replicates train on the same images). 0 keeps the whole split; normalisation
    statistics stay those of the whole split."""
    n = len(dataset.train_labels)
    if not size or size == n:
        return dataset
    if not 0 < size <= n:
        raise ValueError(f"size {size} is outside 1..{n}, the {n} training images of {dataset.name} (0 keeps them "
                         "all).")
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
        raise ValueError(f"side {side} is smaller than the {height}x{width} images of {dataset.name}: use 0 (as "
                         f"they are) or at least {max(height, width)}.")
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
