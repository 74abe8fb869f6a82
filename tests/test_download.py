"""Tests for the opt-in download (elax.data.download) against a loopback HTTP server serving a fake archive."""

import dataclasses
import functools
import hashlib
import http.server
import io
import os
import socket
import tarfile
import threading

import numpy as np
import pytest

from elax import config as config_lib, data
from elax.data import catalog, download

ARCHIVE = "cifar-10-binary.tar.gz"
FOLDER = "cifar-10-batches-bin"
TRAIN_PER_BATCH, TEST_RECORDS = 3, 2


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory, monkeypatch):
    # No real data, no real URL: the default places are empty folders and every URL is set by the test.
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("ELAX_DATA_DIR", raising=False)
    monkeypatch.delenv(download.URL_ENV, raising=False)
    monkeypatch.chdir(home)


# -- the fake archive and the server ---------------------------------------------------------------------------------

def _batch(n: int, start: int) -> bytes:
    """n valid CIFAR-10 binary records: label byte (start + i) % 10, then 3072 pixels that vary in each channel."""
    labels = ((np.arange(n) + start) % 10).astype(np.uint8)[:, None]
    pixels = ((np.arange(3072)[None, :] * 7 + 31 * (np.arange(n)[:, None] + start)) % 256).astype(np.uint8)
    return np.concatenate([labels, pixels], axis=1).tobytes()


def _fake_archive(skip: str = "") -> bytes:
    """A cifar-10-binary.tar.gz of tiny batches (without file `skip`)."""
    files = {f"data_batch_{i}.bin": _batch(TRAIN_PER_BATCH, 3 + TRAIN_PER_BATCH * (i - 1)) for i in range(1, 6)}
    files |= {"test_batch.bin": _batch(TEST_RECORDS, 100), "batches.meta.txt": b"airplane\n"}
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, payload in files.items():
            if name != skip:
                member = tarfile.TarInfo(f"{FOLDER}/{name}")
                member.size = len(payload)
                tar.addfile(member, io.BytesIO(payload))
    return out.getvalue()


GOOD = _fake_archive()


@pytest.fixture
def published():
    """publish(archive bytes): the catalog's cifar10 MD5 becomes that archive's, for the test (real ones stay in
    the code)."""
    original = catalog.get("cifar10")

    def publish(archive: bytes) -> None:
        md5 = hashlib.md5(archive).hexdigest()
        catalog.register(dataclasses.replace(original, download=dataclasses.replace(original.download, md5=md5)))

    yield publish
    catalog.register(original)


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):   # keep the test output clean
        pass

    def do_GET(self):
        self.server.requests.append(self.path)
        super().do_GET()


@pytest.fixture
def server(tmp_path, monkeypatch, published):
    """A loopback HTTP server of the folder `served`, holding the good archive; $ELAX_CIFAR_URL points at it."""
    served = tmp_path / "served"
    served.mkdir()
    (served / ARCHIVE).write_bytes(GOOD)
    published(GOOD)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(served)))
    httpd.requests, httpd.served = [], served
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv(download.URL_ENV, f"http://127.0.0.1:{httpd.server_address[1]}/")
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture
def root(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    return folder


# -- tests -----------------------------------------------------------------------------------------------------------

def test_good_archive_is_downloaded_verified_and_loaded(server, root, capsys):
    ds = data.load("cifar10", str(root), download=True)
    assert len(ds.train_labels) == 5 * TRAIN_PER_BATCH and len(ds.test_labels) == TEST_RECORDS
    assert ds.train_labels[0] == 3 and ds.test_labels[0] == 0
    assert ds.train_images.shape == (15, 32, 32, 3)
    assert os.listdir(root) == [FOLDER]   # no temporary files or folders beside it
    assert server.requests == [f"/{ARCHIVE}"]
    err = capsys.readouterr().err
    assert f"downloading {ARCHIVE}" in err and "\r" not in err and "\x1b" not in err   # plain lines off a terminal


def test_a_second_load_does_not_download_again(server, root):
    data.load("cifar10", str(root), download=True)
    again = data.load("cifar10", str(root), download=True)
    assert len(again.train_labels) == 15 and server.requests == [f"/{ARCHIVE}"]


def test_default_root_is_elax_data_dir_then_home(server, tmp_path, monkeypatch):
    data.load("cifar10", download=True)
    home_copy = os.path.expanduser(f"~/.elax/data/{FOLDER}")
    assert os.path.isdir(home_copy)
    assert data.load("cifar10").source == home_copy   # found later without asking
    monkeypatch.setenv("ELAX_DATA_DIR", str(tmp_path / "elsewhere"))
    assert data.datasets.download_root() == str(tmp_path / "elsewhere")


def test_off_by_default_never_touches_the_network(server, root):
    with pytest.raises(data.DataNotFoundError, match="config.data.download=True"):
        data.load("cifar10", str(root))
    assert server.requests == [] and os.listdir(root) == []


def test_bad_checksum_is_refused_and_nothing_is_left(server, root):
    corrupt = bytearray(GOOD)
    corrupt[len(corrupt) // 2] ^= 0xFF
    (server.served / ARCHIVE).write_bytes(bytes(corrupt))
    with pytest.raises(ValueError, match="MD5") as err:
        data.load("cifar10", str(root), download=True)
    msg = str(err.value)
    assert download.url_of("cifar10") in msg and "Providing CIFAR-10 offline" in msg and "\n" not in msg
    assert os.listdir(root) == []


def test_server_down_is_one_line_naming_url_error_and_manual_way(root, monkeypatch, published):
    published(GOOD)
    with socket.socket() as s:   # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv(download.URL_ENV, f"http://127.0.0.1:{port}")
    with pytest.raises(data.DataNotFoundError) as err:
        data.load("cifar10", str(root / "new" / "dir"), download=True)
    msg = str(err.value)
    assert "\n" not in msg
    assert f"http://127.0.0.1:{port}/{ARCHIVE}" in msg and "refused" in msg.lower()
    assert "Providing CIFAR-10 offline" in msg and "config.data.dir" in msg
    assert os.listdir(root) == []   # not even the folders made for it


def test_http_error_is_named(server, root):
    (server.served / ARCHIVE).unlink()
    with pytest.raises(data.DataNotFoundError, match="HTTP 404"):
        data.load("cifar10", str(root), download=True)
    assert os.listdir(root) == []


def test_ctrl_c_mid_download_leaves_nothing(server, root, monkeypatch):
    def interrupt(self, n):
        raise KeyboardInterrupt

    monkeypatch.setattr(download._Lines, "update", interrupt)
    with pytest.raises(KeyboardInterrupt):
        data.load("cifar10", str(root), download=True)
    assert os.listdir(root) == []


def test_archive_without_every_batch_is_refused(server, root, published):
    incomplete = _fake_archive(skip="test_batch.bin")
    (server.served / ARCHIVE).write_bytes(incomplete)
    published(incomplete)
    with pytest.raises(ValueError, match="lacks cifar-10-batches-bin/test_batch.bin"):
        data.load("cifar10", str(root), download=True)
    assert os.listdir(root) == []


def test_run_context_passes_the_config_flag(server, root):
    from elax.runs import context

    config = config_lib.default_config()
    assert config.data.download is False and config_lib.KEYS["data.download"].resumable
    config.data.download, config.data.dir = True, str(root)
    ds = context._in_memory("cifar10", config.data.dir, 0, 0, context._download(config.data))
    assert len(ds.train_labels) == 15


def test_download_of_a_dataset_elax_cannot_fetch_is_a_config_error():
    config = config_lib.default_config()
    config.data.name, config.data.download = "fashion_mnist", True
    with pytest.raises(config_lib.ConfigError, match=r"^config\.data\.download: elax cannot download fashion_mnist"):
        catalog.check_config(config.data)


def test_official_urls_and_published_checksums():
    assert download.url_of("cifar10") == "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
    assert download.url_of("cifar100") == "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz"
    assert catalog.get("cifar10").download.md5 == "c32a1d4ab5d03f1284b67883e8d87530"
    assert catalog.get("cifar100").download.md5 == "03b5dce01913d631647c71ecec9e9cb8"
    assert catalog.downloadable() == ("cifar10", "cifar100")


@pytest.mark.parametrize("name, kind", [(f"{FOLDER}/../escaped.bin", tarfile.REGTYPE),
                                        (f"{FOLDER}/link.bin", tarfile.SYMTYPE), (f"{FOLDER}/ok.bin", tarfile.REGTYPE)])
def test_extraction_without_pythons_data_filter_refuses_the_same_members(tmp_path, monkeypatch, name, kind):
    """Python before 3.10.12 / 3.11.4 has no tarfile "data" filter: the hand-written check takes its place."""
    monkeypatch.delattr(tarfile, "data_filter")
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        member = tarfile.TarInfo(name)
        member.type, member.linkname = kind, "/etc/passwd" if kind == tarfile.SYMTYPE else ""
        tar.addfile(member, io.BytesIO(b"") if kind == tarfile.REGTYPE else None)
    out.seek(0)
    with tarfile.open(fileobj=out) as tar:
        if name.endswith("ok.bin"):
            download._extract_members(tar, str(tmp_path), tar.getmembers())
            assert (tmp_path / FOLDER / "ok.bin").read_bytes() == b""
        else:
            with pytest.raises(tarfile.TarError, match="is not a plain file or folder inside the archive's folder"):
                download._extract_members(tar, str(tmp_path), tar.getmembers())
            assert not os.listdir(tmp_path)
