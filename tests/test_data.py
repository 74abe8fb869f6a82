"""Tests for elax.data: on-disk readers, error messages and on-device augmentation."""

import gzip
import os
import pickle
import struct
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from elax import data

FASHION_DIR = "/usr/share/datasets/fashion-mnist"


@pytest.fixture(autouse=True)
def _isolated_defaults(tmp_path_factory, monkeypatch):
    # Keep the default search places empty so tests never see real data by accident.
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("ELAX_DATA_DIR", raising=False)
    monkeypatch.chdir(home)


def _cifar_records(n, start, label_bytes):
    """n CIFAR records whose pixel bytes are a known function of (record, position)."""
    labels = (np.arange(n) + start) % 10
    labels = np.stack([labels] * label_bytes, axis=1).astype(np.uint8)
    if label_bytes == 2:
        labels[:, 0] = 99  # Coarse label: must be ignored.
        labels[:, 1] = (np.arange(n) + start) * 7 % 100
    pixels = (np.arange(3072)[None, :] + 13 * (np.arange(n)[:, None] + start)) % 256
    return labels, pixels.astype(np.uint8)


def _write_bin(path, n, start, label_bytes=1):
    labels, pixels = _cifar_records(n, start, label_bytes)
    path.write_bytes(np.concatenate([labels, pixels], axis=1).tobytes())
    return labels[:, -1], pixels


def _check_hwc(images, pixels):
    """images [N,32,32,3] must hold pixels [N,3072] read in CHW order."""
    for h, w, c in [(0, 0, 0), (0, 1, 0), (1, 0, 0), (0, 0, 2), (31, 17, 1), (5, 31, 2)]:
        np.testing.assert_array_equal(images[:, h, w, c], pixels[:, c * 1024 + h * 32 + w])
    np.testing.assert_array_equal(images, pixels.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))


def _write_cifar10_bin(root):
    folder = root / "cifar-10-batches-bin"
    folder.mkdir()
    train = [_write_bin(folder / f"data_batch_{i}.bin", 3, 3 * (i - 1)) for i in range(1, 6)]
    test = _write_bin(folder / "test_batch.bin", 2, 100)
    return folder, train, test


def test_cifar10_binary(tmp_path):
    folder, train, test = _write_cifar10_bin(tmp_path)
    for data_dir in (tmp_path, folder):  # parent or the official folder itself
        ds = data.load("cifar10", str(data_dir))
        assert ds.name == "cifar10" and ds.num_classes == 10 and ds.source == str(folder)
        assert ds.train_images.shape == (15, 32, 32, 3) and ds.train_images.dtype == np.uint8
        assert ds.test_images.shape == (2, 32, 32, 3)
        assert ds.train_labels.dtype == np.int32 and ds.test_labels.dtype == np.int32
        np.testing.assert_array_equal(ds.train_labels, np.arange(15) % 10)
        np.testing.assert_array_equal(ds.test_labels, [0, 1])
        _check_hwc(ds.train_images, np.concatenate([p for _, p in train]))
        _check_hwc(ds.test_images, test[1])


def test_cifar_stats(tmp_path):
    _write_cifar10_bin(tmp_path)
    ds = data.load("cifar10", str(tmp_path))
    x = ds.train_images / 255.0
    np.testing.assert_allclose(ds.mean, x.mean(axis=(0, 1, 2)), rtol=1e-12)
    np.testing.assert_allclose(ds.std, x.std(axis=(0, 1, 2)), rtol=1e-12)
    assert len(ds.mean) == len(ds.std) == 3


def test_cifar100_binary_uses_fine_label(tmp_path):
    folder = tmp_path / "cifar-100-binary"
    folder.mkdir()
    train_y, train_x = _write_bin(folder / "train.bin", 4, 0, label_bytes=2)
    test_y, test_x = _write_bin(folder / "test.bin", 3, 10, label_bytes=2)
    ds = data.load("cifar100", str(tmp_path))
    assert ds.num_classes == 100
    assert ds.train_images.shape == (4, 32, 32, 3) and ds.test_images.shape == (3, 32, 32, 3)
    np.testing.assert_array_equal(ds.train_labels, [0, 7, 14, 21])
    np.testing.assert_array_equal(ds.test_labels, [70, 77, 84])
    _check_hwc(ds.train_images, train_x)
    _check_hwc(ds.test_images, test_x)


def test_cifar10_python(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batches = {f"data_batch_{i}": (3, 3 * (i - 1)) for i in range(1, 6)}
    batches["test_batch"] = (2, 50)
    pixels = {}
    for fname, (n, start) in batches.items():
        labels, pixels[fname] = _cifar_records(n, start, 1)
        batch = {b"data": pixels[fname], b"labels": [int(v) for v in labels[:, 0]]}
        (folder / fname).write_bytes(pickle.dumps(batch))
    ds = data.load("cifar10", str(tmp_path))
    assert ds.source == str(folder)
    assert ds.train_images.shape == (15, 32, 32, 3) and ds.test_images.shape == (2, 32, 32, 3)
    np.testing.assert_array_equal(ds.train_labels, np.arange(15) % 10)
    np.testing.assert_array_equal(ds.test_labels, [0, 1])
    _check_hwc(ds.train_images, np.concatenate([pixels[f"data_batch_{i}"] for i in range(1, 6)]))
    _check_hwc(ds.test_images, pixels["test_batch"])


class _Hostile:
    """Unpickling this runs a shell command (the attack a planted ./data/cifar-10-batches-py file could make)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_hostile_cifar_pickle_is_refused_and_runs_nothing(tmp_path, monkeypatch, protocol):
    root = tmp_path / "data"
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    marker = tmp_path / "pwned"
    for fname in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / fname).write_bytes(pickle.dumps({b"data": _Hostile(marker), b"labels": [0]}, protocol=protocol))
    monkeypatch.chdir(tmp_path)   # ./data is one of the default places, no data.dir given
    with pytest.raises(ValueError, match=r"data_batch_1: not an official CIFAR python batch \(refused to load "
                                         r"posix\.system\)"):
        data.load("cifar10")
    assert not marker.exists()


def test_binary_preferred_over_python(tmp_path):
    folder, _, _ = _write_cifar10_bin(tmp_path)
    (tmp_path / "cifar-10-batches-py").mkdir()  # incomplete, and lower priority anyway
    assert data.load("cifar10", str(tmp_path)).source == str(folder)


def test_default_places_use_elax_data_dir(tmp_path, monkeypatch):
    folder, _, _ = _write_cifar10_bin(tmp_path)
    monkeypatch.setenv("ELAX_DATA_DIR", str(tmp_path))
    assert data.load("cifar10").source == str(folder)


def test_corrupt_cifar_binary(tmp_path):
    folder, _, _ = _write_cifar10_bin(tmp_path)
    (folder / "test_batch.bin").write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="corrupt CIFAR binary"):
        data.load("cifar10", str(tmp_path))


def test_cifar_files_that_cannot_be_this_dataset_are_named(tmp_path):
    folder, _, _ = _write_cifar10_bin(tmp_path)
    (folder / "data_batch_3.bin").write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError) as info:
        data.load("cifar10", str(tmp_path))
    assert str(info.value) == (f"{folder / 'data_batch_3.bin'}: corrupt CIFAR binary file (100 bytes, not a multiple "
                               "of 3073); replace it with a good copy.")
    _write_bin(folder / "data_batch_3.bin", 3, 0)
    record = bytearray((folder / "data_batch_2.bin").read_bytes())
    record[3073] = 12   # the second record's label byte
    (folder / "data_batch_2.bin").write_bytes(bytes(record))
    with pytest.raises(ValueError) as info:
        data.load("cifar10", str(tmp_path))
    assert str(info.value) == (f"{folder / 'data_batch_2.bin'}: labels outside [0, 10) (max 12): not an official "
                               "CIFAR file, or damaged. Replace it with a good copy.")
    _write_bin(folder / "data_batch_2.bin", 3, 0)
    (folder / "data_batch_4.bin").unlink()
    with pytest.raises(data.DataNotFoundError) as info:
        data.load("cifar10", str(tmp_path))
    assert str(info.value) == (f"{folder} lacks data_batch_4.bin of the 6 CIFAR binary batch files: an incomplete "
                               "copy. Copy or extract the missing files again.")
    _write_bin(folder / "data_batch_4.bin", 3, 0)
    (folder / "test_batch.bin").write_bytes(b"")   # 0 bytes is a whole number of records
    with pytest.raises(ValueError) as info:
        data.load("cifar10", str(tmp_path))
    assert str(info.value) == (f"cifar10 test from {folder}: the split holds no images (empty files?). Replace them "
                               "with good copies.")


def test_a_channel_without_variation_is_a_data_error_not_a_divergence(tmp_path):
    folder, _, _ = _write_cifar10_bin(tmp_path)
    for path in folder.iterdir():
        rows = np.frombuffer(path.read_bytes(), np.uint8).reshape(-1, 3073).copy()
        rows[:, 1:1025] = 0   # the red plane of every image
        path.write_bytes(rows.tobytes())
    with pytest.raises(ValueError) as info:
        data.load("cifar10", str(tmp_path))
    assert str(info.value) == (f"cifar10 train from {folder}: colour channel 0 has the same value in every image, so "
                               "it cannot be normalised: the files are damaged or not this dataset.")


def test_cifar_python_batch_of_the_wrong_shape_is_named(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": np.zeros((2, 500), np.uint8), b"labels": [0, 1]}
        (folder / name).write_bytes(pickle.dumps(batch))
    with pytest.raises(ValueError) as info:
        data.load("cifar10", str(tmp_path))
    assert str(info.value) == (f"{folder / 'data_batch_1'}: not an official CIFAR python batch (data uint8 (2, 500), "
                               "2 labels; expected uint8 [N, 3072] and N labels). Replace it with the official file.")


# --- TFDS -------------------------------------------------------------------


def test_read_tfds_under_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    # USE_CODE: no metadata files needed; the split must be named explicitly for
    # data_source, since a metadata-less builder knows no splits.
    with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE):
        train_x, train_y, test_x, test_y = data.datasets._read_tfds("cifar10", "/nonexistent/tfds")
    for x, y in ((train_x, train_y), (test_x, test_y)):
        assert x.shape == (6, 32, 32, 3) and x.dtype == np.uint8
        assert y.shape == (6,) and np.all((0 <= y) & (y < 10))


def test_load_via_prepared_tfds_dir(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    version_dir = tmp_path / "cifar100" / "3.0.2"
    version_dir.mkdir(parents=True)
    (version_dir / "dataset_info.json").write_text("{}")  # marks the dir as prepared
    with tfds.testing.mock_data(num_examples=4, policy=tfds.testing.MockPolicy.USE_CODE):
        ds = data.load("cifar100", str(tmp_path))
    assert ds.source == f"tfds:{tmp_path}"
    assert ds.train_images.shape == (4, 32, 32, 3) and ds.train_images.dtype == np.uint8
    assert ds.train_labels.dtype == np.int32 and ds.train_labels.max() < 100


# --- IDX --------------------------------------------------------------------


def _idx_bytes(array, type_code=0x08):
    header = struct.pack(">BBBB", 0, 0, type_code, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def _write_idx_set(folder, n_train, n_test, gz):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        arrays[prefix] = (
            rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
            rng.integers(0, 10, n, dtype=np.uint8),
        )
        for kind, arr, suffix in (("images", arrays[prefix][0], "idx3"),
                                  ("labels", arrays[prefix][1], "idx1")):
            name = f"{prefix}-{kind}-{suffix}-ubyte"
            raw = _idx_bytes(arr)
            if gz:
                (folder / (name + ".gz")).write_bytes(gzip.compress(raw))
            else:
                (folder / name).write_bytes(raw)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_idx_reader(tmp_path, gz):
    arrays = _write_idx_set(tmp_path, 5, 3, gz)
    ds = data.load("mnist", str(tmp_path))
    assert ds.source == str(tmp_path) and ds.num_classes == 10
    assert ds.train_images.shape == (5, 28, 28, 1) and ds.train_images.dtype == np.uint8
    assert ds.test_images.shape == (3, 28, 28, 1)
    np.testing.assert_array_equal(ds.train_images[..., 0], arrays["train"][0])
    np.testing.assert_array_equal(ds.train_labels, arrays["train"][1])
    np.testing.assert_array_equal(ds.test_images[..., 0], arrays["t10k"][0])
    np.testing.assert_array_equal(ds.test_labels, arrays["t10k"][1])


def test_idx_subfolder_of_data_dir(tmp_path):
    _write_idx_set(tmp_path / "fashion-mnist", 2, 2, gz=True)
    ds = data.load("fashion_mnist", str(tmp_path))
    assert ds.source == str(tmp_path / "fashion-mnist")


def test_read_idx_other_dtypes_and_corruption(tmp_path):
    arr = (np.arange(6).reshape(2, 3) - 3).astype(">i4")  # IDX is big-endian
    (tmp_path / "ok").write_bytes(_idx_bytes(arr, 0x0C))
    out = data.read_idx(str(tmp_path / "ok"))
    np.testing.assert_array_equal(out, arr)
    assert out.dtype == np.int32 and out.dtype.isnative
    (tmp_path / "magic").write_bytes(b"\x01\x02\x08\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match="magic"):
        data.read_idx(str(tmp_path / "magic"))
    (tmp_path / "short").write_bytes(_idx_bytes(np.zeros((4, 2), np.uint8))[:-1])
    with pytest.raises(ValueError, match="corrupt"):
        data.read_idx(str(tmp_path / "short"))


@pytest.mark.skipif(not os.path.isdir(FASHION_DIR), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist():
    ds = data.load("fashion_mnist")  # found via the Debian package's folder
    assert ds.source == FASHION_DIR
    assert ds.train_images.shape == (60000, 28, 28, 1)
    assert ds.test_images.shape == (10000, 28, 28, 1)
    assert ds.num_classes == 10 and set(np.unique(ds.train_labels)) == set(range(10))
    assert abs(ds.mean[0] - 0.2860) < 1e-3 and abs(ds.std[0] - 0.3530) < 1e-3


# --- digits -----------------------------------------------------------------


def test_digits():
    ds = data.load("digits")
    assert ds.source == "sklearn" and ds.num_classes == 10
    assert ds.train_images.shape == (1437, 8, 8, 1) and ds.test_images.shape == (360, 8, 8, 1)
    assert ds.train_images.dtype == np.uint8 and ds.train_images.max() == 255
    again = data.load("digits")
    np.testing.assert_array_equal(ds.train_images, again.train_images)
    np.testing.assert_array_equal(ds.test_labels, again.test_labels)


def test_digits_read_without_scikit_learn_equal_its_load_digits():
    from sklearn.datasets import load_digits
    from elax.data.files import digits_table
    reference = load_digits()
    images, targets = digits_table()
    np.testing.assert_array_equal(images, reference.images)
    np.testing.assert_array_equal(targets, reference.target)


def test_pad_images_centres_each_image_on_black_and_renormalises():
    ds = data.load("digits")
    padded = data.pad_images(ds, 11)
    assert padded.train_images.shape == (1437, 11, 11, 1) and padded.test_images.shape == (360, 11, 11, 1)
    for before, after in ((ds.train_images, padded.train_images), (ds.test_images, padded.test_images)):
        np.testing.assert_array_equal(after[:, 1:9, 1:9], before)  # (11 - 8) // 2 = 1 above and left, 2 below, right
        assert after.sum() == before.sum()                         # everything else is 0
    assert padded.train_labels is ds.train_labels and padded.test_labels is ds.test_labels
    pixels = padded.train_images / 255.0
    assert abs(padded.mean[0] - pixels.mean()) < 1e-9 and abs(padded.std[0] - pixels.std()) < 1e-9
    assert padded.mean[0] == pytest.approx(ds.mean[0] * 64 / 121)
    assert data.pad_images(ds, 0) is ds and data.pad_images(ds, 8) is ds
    with pytest.raises(ValueError, match=r"side 7 is smaller than the 8x8 images of digits: use 0 \(as they are\) "
                                         r"or at least 8"):
        data.pad_images(ds, 7)


# --- errors -----------------------------------------------------------------


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as err:
        data.load("imagenet")
    for name in data.catalog.DATASETS.names():
        assert name in str(err.value)


def test_missing_cifar10_fails_fast_with_advice(tmp_path):
    start = time.monotonic()
    with pytest.raises(data.DataNotFoundError) as err:
        data.load("cifar10", str(tmp_path))
    assert time.monotonic() - start < 5
    msg = str(err.value)
    assert str(tmp_path) in msg and "cifar-10" in msg
    assert "https://www.cs.toronto.edu/~kriz/cifar.html" in msg
    assert isinstance(err.value, FileNotFoundError)


def test_missing_with_defaults_lists_every_place(tmp_path, monkeypatch):
    monkeypatch.setenv("ELAX_DATA_DIR", str(tmp_path))
    with pytest.raises(data.DataNotFoundError) as err:
        data.load("cifar100")
    msg = str(err.value)
    for place in data.looks_for("cifar100"):
        assert place in msg
    for root in (str(tmp_path), os.path.expanduser("~/tensorflow_datasets"),
                 os.path.expanduser("~/.elax/data"), os.path.join(os.getcwd(), "data")):
        assert root in msg
    assert "cifar-100-binary" in msg


def test_missing_fashion_mnist_suggests_apt(tmp_path):
    with pytest.raises(data.DataNotFoundError, match="apt-get install dataset-fashion-mnist"):
        data.load("fashion_mnist", str(tmp_path))


def test_nonexistent_data_dir(tmp_path):
    missing = tmp_path / "no" / "such" / "dir"
    with pytest.raises(data.DataNotFoundError, match="does not exist") as err:
        data.load("cifar10", str(missing))
    assert str(missing) in str(err.value)


# --- augmentation ------------------------------------------------------------


def _distinct_images(b=4, h=6, w=5, c=2):
    # Values 1..N, so zeros in an output can only come from padding.
    return jnp.arange(1, b * h * w * c + 1, dtype=jnp.float32).reshape(b, h, w, c)


@pytest.mark.parametrize("dtype", [jnp.uint8, jnp.float32, jnp.bfloat16])
def test_crop_flip_preserves_shape_and_dtype(dtype):
    images = jnp.ones((3, 8, 8, 3), dtype)
    out = jax.jit(data.random_crop_flip)(images, jax.random.key(0))
    assert out.shape == images.shape and out.dtype == images.dtype


def test_crop_with_zero_pad_is_identity():
    images = _distinct_images()
    out = data.random_crop(images, jax.random.key(3), pad=0)
    np.testing.assert_array_equal(out, images)


def test_flip_is_per_example_w_reversal():
    images = _distinct_images(b=32)
    out = np.asarray(data.random_crop_flip(images, jax.random.key(1), pad=0))
    flipped = [np.array_equal(o, x[:, ::-1]) for o, x in zip(out, np.asarray(images))]
    kept = [np.array_equal(o, x) for o, x in zip(out, np.asarray(images))]
    assert all(f or k for f, k in zip(flipped, kept))
    assert any(flipped) and any(kept)


def test_every_crop_is_a_window_of_the_padded_input():
    pad, images = 2, _distinct_images(b=16)
    augment = jax.jit(data.random_crop_flip, static_argnums=2)
    out = np.asarray(augment(images, jax.random.key(7), pad))
    padded = np.pad(np.asarray(images), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    _, h, w, _ = images.shape
    offsets = set()
    for i, o in enumerate(out):
        hits = [(dy, dx) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
                for win in [padded[i, dy:dy + h, dx:dx + w]]
                if np.array_equal(o, win) or np.array_equal(o, win[:, ::-1])]
        assert hits, f"example {i} is not a window of its padded input"
        offsets.add(hits[0])
    assert len(offsets) > 1  # offsets are drawn per example


def test_same_key_same_output():
    images = _distinct_images(b=8)
    a = data.random_crop_flip(images, jax.random.key(5))
    b = data.random_crop_flip(images, jax.random.key(5))
    c = data.random_crop_flip(images, jax.random.key(6))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_normalize_constant_image():
    images = jnp.full((2, 4, 4, 3), 51, jnp.uint8)
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 2.0)
    out = jax.jit(data.normalize)(images, mean, std)
    assert out.dtype == jnp.float32 and out.shape == images.shape
    expected = [(0.2 - m) / s for m, s in zip(mean, std)]
    np.testing.assert_allclose(out.mean(axis=(0, 1, 2)), expected, atol=1e-6)
    assert data.normalize(images, mean, std, dtype=jnp.bfloat16).dtype == jnp.bfloat16


def test_damaged_tfds_dataset_is_one_clear_error(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    info = tmp_path / "cifar10" / "3.0.2"
    info.mkdir(parents=True)
    (info / "dataset_info.json").write_text("{garbage")
    with pytest.raises(ValueError, match=r"the prepared TFDS dataset cifar10:3.0.2 in .* cannot be read .*"
                                         r"prepare it again"):
        data.load("cifar10", str(tmp_path))
