"""The streamed input pipeline (Grain): same batches as the device source, ImageFolder/TFDS records, ImageNet
augmentation, and resumable training of a tiny ImageNet ResNet on a JPEG folder written here."""

import math
import multiprocessing
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, synthetic_dataset, tiny_config
from elax import data, masks, models, optim, runs, train, workdir as wd
from elax.data import images as image_ops, records, stream


def _stream_of(dataset, workers=0):
    return data.StreamSource(records.ArrayRecords(dataset.train_images, dataset.train_labels),
                             records.ArrayRecords(dataset.test_images, dataset.test_labels), dataset.num_classes,
                             dataset.mean, dataset.std, workers=workers)


def _write_jpegs(root, counts, seed=0):
    """root/<split>/<class>/*.JPEG of random content and sizes around 40x48 px."""
    import simplejpeg
    rng = np.random.default_rng(seed)
    for split, per_class in counts.items():
        for c in ("ant", "bee", "cat"):
            os.makedirs(root / split / c)
            for i in range(per_class):
                h, w = rng.integers(36, 48, size=2)
                image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                (root / split / c / f"{i}.JPEG").write_bytes(simplejpeg.encode_jpeg(image, quality=90))
    return str(root)


@pytest.fixture(scope="module")
def jpeg_dir(tmp_path_factory):
    """3 classes x 8 training and 3 classes x 2 validation JPEGs."""
    return _write_jpegs(tmp_path_factory.mktemp("jpegs"), {"train": 8, "val": 2})


def test_stream_gives_the_device_sources_batches_and_evaluation(resnet8_variables):
    dataset = synthetic_dataset()   # 80 training images: batch 16 x 5 steps, epochs of another order each
    mesh = train.make_mesh()
    device, stream = data.put_on_devices(dataset, mesh), _stream_of(dataset)
    spec = data.BatchSpec(seed=3, batch_size=24, steps_per_epoch=4, augment=False)  # 96 > 80: the last wraps
    for step in (0, 1, 3, 4, 6):    # a jump back, mid-epoch starts, the wrapped batch, the next epoch
        images, labels = device.train_batch(spec, step, device.epoch_order(spec, step))
        ((raw, streamed_labels),) = list(stream.train_batches(spec, step, 1, mesh))
        np.testing.assert_array_equal(np.asarray(data.normalize(raw, dataset.mean, dataset.std)), images)
        np.testing.assert_array_equal(streamed_labels, labels)
    model, variables = models.get_model("cifar_resnet_8_4"), resnet8_variables   # of TINY_SHAPE images, as these
    trainer = train.Trainer(model, optim.sgd(0.9, 0.0), lambda s: 0.1, mesh, batch_size=16,
                            steps_per_epoch=5, seed=0, augment=False, eval_batch_size=8)  # 13 test: one padded
    expected = trainer.evaluate(variables["params"], variables["batch_stats"], device)
    got = trainer.evaluate(variables["params"], variables["batch_stats"], stream)
    assert got["accuracy"] == pytest.approx(expected["accuracy"], abs=1e-7)
    assert got["loss"] == pytest.approx(expected["loss"], rel=1e-6)


def test_one_pipeline_serves_many_epochs_and_every_evaluation(monkeypatch):
    """Grain's worker processes take seconds to start (each imports JAX): a pipeline per epoch and per evaluation
    made a small streamed run 4x slower than one held on the device. Jumps (a level starting at its rewind step)
    still start a new one; evaluations read the same batches each time."""
    dataset = synthetic_dataset()
    mesh = train.make_mesh()
    source, built, pipeline = _stream_of(dataset), [], data.StreamSource._pipeline
    monkeypatch.setattr(data.StreamSource, "_pipeline",
                        lambda self, *args, **kw: built.append(kw.get("repeat", False)) or pipeline(self, *args, **kw))
    spec = data.BatchSpec(seed=0, batch_size=16, steps_per_epoch=5, augment=False)
    evaluations = []
    for step in (0, 5, 10):   # three epochs, each evaluated
        assert len(list(source.train_batches(spec, step, 5, mesh))) == 5
        evaluations.append([np.asarray(images) for images, _, _ in source.eval_batches(8, mesh)])
    assert built == [False, True]
    for first, later in zip(evaluations[0], evaluations[2]):
        np.testing.assert_array_equal(first, later)
    list(source.train_batches(spec, 2, 1, mesh))
    assert built == [False, True, False]
    source.close()


def test_worker_processes_give_the_batches_of_threads():
    dataset = synthetic_dataset()
    mesh = train.make_mesh()
    spec = data.BatchSpec(seed=0, batch_size=16, steps_per_epoch=5, augment=True)
    threads = list(_stream_of(dataset).train_batches(spec, 2, 3, mesh))
    batches = _stream_of(dataset, workers=2).train_batches(spec, 2, 3, mesh)
    workers = [next(batches)]
    # Ctrl-C signals the terminal's whole process group: the workers must leave it to this process, which stops
    # them (each used to print a traceback). They inherit SIGINT blocked.
    sigint = 1 << (signal.SIGINT - 1)
    children = multiprocessing.active_children()
    assert len(children) == 2 and all(_blocked_signals(child.pid) & sigint for child in children)
    assert not signal.pthread_sigmask(signal.SIG_BLOCK, []) & {signal.SIGINT}   # not this process
    workers += list(batches)
    assert len(threads) == len(workers) == 3
    for (a, la), (b, lb) in zip(threads, workers):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(la, lb)
    # Augmented on the host from (seed, step, row): the same batch again, a different one at the next step.
    again, _ = _stream_of(dataset).host_batch(spec, 2)
    np.testing.assert_array_equal(again, threads[0][0])
    assert not np.array_equal(threads[0][0], threads[1][0])


def _blocked_signals(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("SigBlk:")).split()[1], 16)


def test_training_streamed_equals_training_on_the_device(imp_run, tmp_path):
    _, reference = imp_run          # the quickstart recipe on digits, device source, no augmentation
    # The dense level: batches read mid-epoch (a rewound level's start) are checked above, and resumed below.
    config = tiny_config(**{"lottery.levels": 0, "data.source": "stream", "data.workers": 0})
    streamed = runs.run_imp(config, str(tmp_path / "run"), log=lambda _: None)
    assert len(streamed) == 1
    for got, expected in zip(streamed, reference):
        assert got["kept_weights"] == expected["kept_weights"] and got["steps"] == expected["steps"]
        assert got["test_accuracy"] == pytest.approx(expected["test_accuracy"], abs=1e-6)
        assert got["test_loss"] == pytest.approx(expected["test_loss"], rel=1e-5)


def test_random_resized_crop_follows_torchvision():
    rng = np.random.default_rng(0)
    for _ in range(200):
        top, left, h, w = image_ops.random_resized_crop_box(350, 400, rng)
        assert 0 <= top <= 350 - h and 0 <= left <= 400 - w
        assert 0.1 * 350 * 400 * 0.97 <= h * w <= 350 * 400 and 0.8 * 0.97 <= w / h <= 1.25 * 1.03
    # Impossible crops (a 1x50 strip) fall back to the centre crop at the nearest allowed aspect ratio.
    assert image_ops.random_resized_crop_box(1, 50, rng) == (0, 24, 1, 1)
    image = np.arange(40 * 60 * 3, dtype=np.uint8).reshape(40, 60, 3)
    out = image_ops.train_transform(image, np.random.default_rng(1), 24)
    assert out.shape == (24, 24, 3) and out.dtype == np.uint8
    centre = image_ops.eval_transform(image, 24, 32)     # 40x60 -> 32x48 -> centre 24x24
    np.testing.assert_array_equal(centre, image_ops.resize(image, 32, 48)[4:28, 12:36])


def test_image_folder_records_and_their_errors(jpeg_dir, tmp_path):
    splits = records.open_splits("imagefolder", jpeg_dir)
    assert (len(splits.train), len(splits.test), splits.num_classes) == (24, 6, 3)
    assert splits.train.classes == ("ant", "bee", "cat") and list(splits.test.labels) == [0, 0, 1, 1, 2, 2]
    encoded, label = splits.train[9]
    assert label == 1 and image_ops.decode(encoded).ndim == 3
    with pytest.raises(FileNotFoundError, match=r"dataset 'imagenet2012' not found. Looked in:\n.*array_record"):
        records.open_splits("imagenet2012", str(tmp_path))
    with pytest.raises(FileNotFoundError) as info:
        records.open_splits("imagefolder", str(tmp_path / "nowhere"))
    assert str(info.value) == f"data dir {str(tmp_path / 'nowhere')!r} does not exist (or is not a directory)"
    with pytest.raises(FileNotFoundError) as info:
        records.open_splits("imagefolder", os.path.join(jpeg_dir, "train"))
    assert str(info.value).endswith("To provide it: data.dir names a split of an ImageFolder tree; pass the tree, "
                                    f"config.data.dir={jpeg_dir}.")
    (tmp_path / "val" / "dog").mkdir(parents=True)
    for name in ("ant", "cat"):
        (tmp_path / "train" / name).mkdir(parents=True)
        (tmp_path / "train" / name / "0.jpg").write_bytes(encoded)
    with pytest.raises(ValueError, match=r"class folders the training split lacks: \['dog'\]"):
        records.open_splits("imagefolder", str(tmp_path))
    with pytest.raises(ValueError, match="config.data.source: imagenet2012 does not fit on a device"):
        runs.run_imp(tiny_config(**{"data.name": "imagenet2012", "data.source": "device"}), str(tmp_path / "r"))


# A process that reads one batch through 2 Grain worker processes, then runs what is appended.
READ_ONE_BATCH_WITH_WORKERS = """if True:
    import sys, time; sys.path.insert(0, "tests")
    from conftest import synthetic_dataset
    from elax import data, train
    from elax.data import records
    d = synthetic_dataset()
    source = data.StreamSource(records.ArrayRecords(d.train_images, d.train_labels),
                               records.ArrayRecords(d.test_images, d.test_labels), 10, d.mean, d.std, workers=2)
    batches = source.train_batches(data.BatchSpec(seed=0, batch_size=8, steps_per_epoch=10, augment=False),
                                   0, 10, train.make_mesh())
    next(batches)
"""


def test_a_pipeline_dropped_with_batches_in_flight_exits_without_a_leak_warning():
    # Worker processes hand batches over in shared memory; Python's resource tracker unlinks those still in
    # flight at exit and warned of "leaked shared_memory objects" after every streamed run with workers.
    script = READ_ONE_BATCH_WITH_WORKERS + """
    batches.close()   # as a run does when its level ends: 9 batches were still on their way
    print("one batch read")
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout == "one batch read\n", done.stderr
    assert "leaked shared_memory" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads /proc")
def test_grain_workers_exit_when_their_run_is_killed():
    """Workers that run (a batch read) and workers still starting (importing JAX) when their run is SIGKILLed: a
    worker that starts after its parent died used to take its new parent for its own and stay, holding memory."""
    import time
    script = READ_ONE_BATCH_WITH_WORKERS + """
    import multiprocessing, os, signal, threading
    running = len(multiprocessing.active_children())
    other = data.StreamSource(source.train_records, source.test_records, 10, d.mean, d.std, workers=1)
    starting = other.train_batches(data.BatchSpec(seed=1, batch_size=8, steps_per_epoch=10, augment=False), 0, 10,
                                   train.make_mesh())
    threading.Thread(target=next, args=(starting,), daemon=True).start()
    while len(multiprocessing.active_children()) < running + 1:
        time.sleep(0.01)
    print(*[child.pid for child in multiprocessing.active_children()], flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""
    run = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        workers = [int(pid) for pid in run.stdout.readline().split()]
    finally:
        run.kill()
        run.wait()
    assert len(workers) == 3
    deadline = time.monotonic() + 60   # the starting ones exit once they have imported JAX and Grain
    while any(map(_running, workers)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [w for w in workers if _running(w)] == []


def _running(pid):
    """Whether process `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _image_tree(root, train, val=None):
    """root/train/<class>/<file> and root/val/... from {class: {file: bytes}}; returns root as a str."""
    for split, classes in (("train", train), ("val", val or train)):
        for name, files in classes.items():
            (root / split / name).mkdir(parents=True)
            for file, content in files.items():
                (root / split / name / file).write_bytes(content)
    return str(root)


@pytest.mark.parametrize("content, problem", [
    (b"not an image", "cannot decode {}: not a JPEG, PNG or BMP image, or damaged"),
    (b"", "cannot decode {}: not a JPEG, PNG or BMP image, or damaged"),     # OpenCV raises on empty buffers
    (None, "cannot read {}: No such file or directory")])                     # deleted after the scan
def test_a_damaged_image_is_named_with_the_way_out(tmp_path, content, problem):
    root = _image_tree(tmp_path / "folder", {c: {"0.jpg": content or b"x"} for c in ("ant", "cat")})
    bad = tmp_path / "folder" / "train" / "ant" / "0.jpg"
    splits = records.open_splits("imagefolder", root)
    if content is None:
        bad.unlink()
    example = stream._Example(splits.train, seed=0, train=True, augment=True, options=data.ImageOptions(32, 36))
    with pytest.raises(ValueError) as info:
        example(np.array([0, 0, 0]))
    assert str(info.value) == (problem.format(bad) + ". Replace or delete it and run the same command; finished "
                               "levels are kept.")


def test_image_folder_scan_skips_hidden_entries_and_refuses_what_cannot_train(tmp_path):
    jpeg = b"\xff\xd8 a scan reads names only"
    root = _image_tree(tmp_path / "ok", {"ant": {"0.jpg": jpeg, "._0.jpg": b"", "notes.txt": b""},
                                         ".ipynb_checkpoints": {"1.jpg": jpeg}, "bee": {"0.JPEG": jpeg}},
                       val={"ant": {"0.jpg": jpeg}, "bee": {}})   # an empty val class: a smaller test set
    splits = records.open_splits("imagefolder", root)
    assert splits.train.classes == ("ant", "bee") and list(splits.train.files) == ["ant/0.jpg", "bee/0.JPEG"]
    assert list(splits.test.files) == ["ant/0.jpg"] and list(splits.test.labels) == [0]
    assert splits.where == f"ImageFolder {tmp_path / 'ok'} (its val/ has no images of 1 class: bee)"

    empty = _image_tree(tmp_path / "empty", {"ant": {"0.jpg": jpeg}, "bee": {"._0.jpg": b""}})
    with pytest.raises(ValueError) as info:
        records.open_splits("imagefolder", empty)
    assert str(info.value) == (f"{tmp_path / 'empty' / 'train' / 'bee'} holds no images (.jpeg, .jpg, .png, .bmp): "
                               "a class without training images would get a label the network never sees. Delete "
                               "the folder or add its images.")
    one = _image_tree(tmp_path / "one", {"ant": {"0.jpg": jpeg}})
    with pytest.raises(ValueError) as info:
        records.open_splits("imagefolder", one)
    assert str(info.value) == (f"{tmp_path / 'one' / 'train'} has 1 class folder ['ant']: classification needs at "
                               "least two (train/<class>/*.JPEG, one folder per class).")
    os.symlink(tmp_path / "nowhere.jpg", tmp_path / "ok" / "train" / "bee" / "1.jpg")
    with pytest.raises(FileNotFoundError) as info:
        records.open_splits("imagefolder", root)
    link = tmp_path / "ok" / "train" / "bee" / "1.jpg"
    assert str(info.value) == f"{link} is a broken symbolic link. Replace or delete it."


def test_image_folder_scan_names_what_is_not_a_file_and_unsorted_val_images(tmp_path):
    jpeg = b"\xff\xd8 a scan reads names only"
    root = _image_tree(tmp_path / "t", {"ant": {"0.jpg": jpeg}, "bee": {"0.jpg": jpeg}})
    pipe = tmp_path / "t" / "train" / "bee" / "1.jpg"
    os.mkfifo(pipe)   # reading it would block for ever
    with pytest.raises(ValueError) as info:
        records.open_splits("imagefolder", root)
    assert str(info.value) == (f"{pipe} has an image's name but is not a file (a folder, pipe or device). Move it "
                               "out of the class folder.")
    pipe.unlink()
    pipe.mkdir()
    with pytest.raises(ValueError, match="1.jpg has an image's name but is not a file"):
        records.open_splits("imagefolder", root)
    pipe.rmdir()
    val = tmp_path / "t" / "val"
    for name in ("ant", "bee"):   # ImageNet's raw validation layout: every image directly in val/
        (val / name / "0.jpg").rename(val / f"{name}.jpg")
    with pytest.raises(FileNotFoundError) as info:
        records.open_splits("imagefolder", root)
    assert str(info.value) == (f"{val} holds no images (.jpeg, .jpg, .png, .bmp) in class folders. It holds 2 "
                               f"images directly: sort them into one folder per class ({val}/<class>/; ImageNet's "
                               "validation images come unsorted, and its devkit's labels say which class each is).")
    tree = tmp_path / "f"
    tree.mkdir()
    (tree / "train").write_bytes(b"")
    with pytest.raises(FileNotFoundError) as info:
        records.open_splits("imagefolder", str(tree))
    assert str(info.value) == (f"{tree / 'train'} is a file, not a folder: an ImageFolder tree is "
                               "DIR/train/<class>/<image> and DIR/val/<class>/<image>.")


def test_an_unreadable_image_says_to_make_it_readable(tmp_path, monkeypatch):
    root = _image_tree(tmp_path / "t", {c: {"0.jpg": b"x"} for c in ("ant", "bee")})
    splits = records.open_splits("imagefolder", root)

    def refuse(self, index):
        raise PermissionError(13, "Permission denied")   # chmod 000 does not bite when tests run as root
    monkeypatch.setattr(records.ImageFolder, "__getitem__", refuse)
    example = stream._Example(splits.train, seed=0, train=True, augment=True, options=data.ImageOptions(32, 36))
    with pytest.raises(ValueError) as info:
        example(np.array([0, 0, 0]))
    assert str(info.value) == (f"cannot read {tmp_path / 't' / 'train' / 'ant' / '0.jpg'}: Permission denied. Make "
                               "it readable (chmod a+r) or delete it and run the same command; finished levels are "
                               "kept.")


def test_tfds_array_record_records_stay_encoded():
    import simplejpeg
    import tensorflow_datasets as tfds
    jpeg = simplejpeg.encode_jpeg(np.full((20, 30, 3), 7, np.uint8))

    def fake_source(builder, split, decoders=None, **_):
        assert isinstance(decoders["image"], tfds.decode.SkipDecoding)   # decoding is ours, on the workers
        return [{"image": jpeg, "label": i % 5} for i in range(7 if split == "train" else 3)]

    with tfds.testing.mock_data(as_data_source_fn=fake_source):
        train_records = records.TFDSRecords("imagenet2012", "train", "/nonexistent")
        assert len(train_records) == 7 and train_records.num_classes == 1000
        encoded, label = train_records[6]
        assert label == 1 and image_ops.decode(encoded).shape == (20, 30, 3)


def _jpeg_config(jpeg_dir, **overrides):
    return tiny_config(**{"model.name": "imagenet_resnet_18_8", "data.name": "imagefolder", "data.dir": jpeg_dir,
                          "data.augment": True, "data.workers": 0, "data.image_size": 32, "data.resize_size": 36,
                          "train.batch_size": 8, "train.epochs": 2, "train.milestones": (), "lottery.levels": 1,
                          "lottery.rewind_steps": 1, "lottery.prune_fraction": 0.5, **overrides})


def test_imagenet_resnet_trains_on_a_jpeg_folder_and_resumes_mid_epoch(jpeg_dir, tmp_path, monkeypatch):
    config = _jpeg_config(jpeg_dir)
    reference = runs.run_imp(config, str(tmp_path / "whole"), log=lambda _: None)
    assert [(r["level"], r["steps"], r["rewind_step"]) for r in reference] == [(0, 6, 1), (1, 6, 1)]
    family = models.family_of("imagenet_resnet_18_8")
    dense = runs.load_ticket(str(tmp_path / "whole"), 0)
    total = sum(int(np.size(leaf)) for leaf in masks.prunable_leaves(dense.params, family.prunable).values())
    assert reference[1]["kept_weights"] == total - math.ceil(total / 2)
    assert not np.all(np.asarray(runs.load_ticket(str(tmp_path / "whole"), 1).mask["head"]["kernel"]))

    served, real_batches = {"n": 0}, data.StreamSource.train_batches

    def dying_batches(self, *args):
        for batch in real_batches(self, *args):
            served["n"] += 1
            if served["n"] == 8:   # level 1's second batch (step 2): it started mid-epoch at rewind step 1
                raise KeyboardInterrupt
            yield batch

    monkeypatch.setattr(data.StreamSource, "train_batches", dying_batches)
    workdir = str(tmp_path / "killed")
    with pytest.raises(KeyboardInterrupt):
        runs.run_imp(config, workdir, log=lambda _: None)
    assert [r["level"] for r in wd.load_results(workdir)] == [0]
    monkeypatch.setattr(data.StreamSource, "train_batches", real_batches)
    assert runs.run_imp(config, workdir, log=lambda _: None) == reference
