"""The opt-in download of a dataset's official archive (`config.data.download=True`; CIFAR-10 and CIFAR-100).

`fetch` streams the archive into a temporary folder inside the destination root, checks its MD5 against the one
the catalog holds (`elax.data.catalog.Download`), unpacks it there and renames the dataset's folder into place:
the rename is the only step others can see, so a failure at any point (network, checksum, disk, Ctrl-C) leaves
nothing behind. elax never calls it unless asked.

The base URL is `BASE_URL`, or `$ELAX_CIFAR_URL` when set (read at each call: mirrors and tests).
"""

import gzip
import hashlib
import http.client
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib

from elax.data import catalog
from elax.data.files import FORMATS, DataNotFoundError, Layout

BASE_URL = "https://www.cs.toronto.edu/~kriz/"
URL_ENV = "ELAX_CIFAR_URL"
TIMEOUT_S = 60          # per socket operation: a stalled server fails instead of hanging a run
CHUNK = 1 << 20
MANUAL = ("provide it by hand as docs/data.md's 'Providing CIFAR-10 offline' says: download {archive} from "
          f"{catalog.CIFAR_URL} on a machine with internet, extract it and pass config.data.dir")


def base_url() -> str:
    return os.environ.get(URL_ENV) or BASE_URL


def url_of(name: str) -> str:
    """Where dataset `name`'s archive is downloaded from."""
    return f"{base_url().rstrip('/')}/{_spec(name).archive}"


def fetch(name: str, root: str) -> str:
    """Downloads, verifies and unpacks dataset `name` into `root`; returns its folder there. A non-empty folder
    already in place is kept as it is, without downloading."""
    spec = _spec(name)
    dest = os.path.join(root, spec.folder)
    if os.path.isdir(dest) and os.listdir(dest):
        return dest
    url = url_of(name)
    created = _make_dirs(root)
    # A hidden work folder in `root` itself: the final rename stays on one filesystem, so it is atomic.
    work = tempfile.mkdtemp(prefix=f".{spec.folder}.", suffix=".part", dir=root)
    try:
        archive = os.path.join(work, spec.archive)
        _check_md5(_download(url, archive, spec.archive), spec, url)
        _place(_extract(archive, work, name, spec), dest)
    except BaseException:   # Ctrl-C included: remove the folders made for it too
        shutil.rmtree(work, ignore_errors=True)
        _remove_empty(created)
        raise
    shutil.rmtree(work, ignore_errors=True)
    return dest


def _make_dirs(root: str) -> list[str]:
    """Makes `root`; returns the folders it made, deepest first."""
    made, path = [], os.path.abspath(root)
    while not os.path.isdir(path) and path != os.path.dirname(path):
        made.append(path)
        path = os.path.dirname(path)
    os.makedirs(root, exist_ok=True)
    return made


def _remove_empty(folders: list[str]) -> None:
    for folder in folders:
        try:
            os.rmdir(folder)
        except OSError:   # not empty: something else uses it now
            return


def _spec(name: str) -> catalog.Download:
    spec = catalog.get(name).download
    if spec is None:
        raise ValueError(f"elax cannot download {name}; it downloads {', '.join(catalog.downloadable())}.")
    return spec


def _download(url: str, path: str, archive: str) -> str:
    """Streams `url` into `path` with a progress display; returns the MD5 of what came."""
    digest, received = hashlib.md5(), 0
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response, open(path, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with _progress(total, archive) as bar:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as e:
        raise _unreachable(url, archive, _reason(e)) from None
    # urllib does not raise when a connection closes early: a short file is a network failure, not a bad archive.
    if total and received != total:
        raise _unreachable(url, archive, f"the connection closed after {received} of {total} bytes")
    return digest.hexdigest()


def _reason(e: Exception) -> str:
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    reason = e.reason if isinstance(e, urllib.error.URLError) else e
    return " ".join(f"{type(reason).__name__}: {reason}".split())   # one line, whatever the OS said


def _unreachable(url: str, archive: str, reason: str) -> DataNotFoundError:
    return DataNotFoundError(f"cannot download {url} ({reason}). Without internet, {MANUAL.format(archive=archive)}.")


def _check_md5(got: str, spec: catalog.Download, url: str) -> None:
    if got != spec.md5:
        raise ValueError(f"{url}: MD5 {got} is not the published {spec.md5}: a damaged download or not the official "
                         f"archive, and nothing was kept. Run again, or {MANUAL.format(archive=spec.archive)}.")


def _extract_members(tar: tarfile.TarFile, work: str, members: list) -> None:
    """Extract `members` into `work`, refusing absolute paths, paths out of `work`, links and device files: the
    "data" filter where Python has it (3.10.12, 3.11.4 and later), the same refusals by hand before."""
    if hasattr(tarfile, "data_filter"):
        tar.extractall(work, members=members, filter="data")
        return
    for member in members:
        if not (member.isfile() or member.isdir()) or os.path.isabs(member.name) or ".." in member.name.split("/"):
            raise tarfile.TarError(f"{member.name!r} is not a plain file or folder inside the archive's folder")
    tar.extractall(work, members=members)


def _extract(archive: str, work: str, name: str, spec: catalog.Download) -> str:
    """Unpacks the dataset's folder of `archive` into `work`; returns it, checked complete."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = [m for m in tar.getmembers() if m.name == spec.folder or m.name.startswith(spec.folder + "/")]
            _extract_members(tar, work, members)
    except (tarfile.TarError, gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise ValueError(f"{archive}: damaged archive ({e}); run again, or "
                         f"{MANUAL.format(archive=spec.archive)}.") from None
    folder = os.path.join(work, spec.folder)
    missing = [f for f in _expected_files(name, spec.folder) if not os.path.isfile(os.path.join(folder, f))]
    if missing:
        raise ValueError(f"{spec.archive} lacks {spec.folder}/{', '.join(missing)}: not the official archive.")
    return folder


def _expected_files(name: str, folder: str) -> tuple[str, ...]:
    """The files the dataset's format read from `folder` needs."""
    for fmt in map(FORMATS.get, catalog.get(name).formats):
        if isinstance(fmt, Layout) and folder in fmt.folders:
            return fmt.train + fmt.test
    return ()


def _place(folder: str, dest: str) -> None:
    try:
        os.rename(folder, dest)   # replaces an empty `dest`; fails on a non-empty one
    except OSError:
        if not (os.path.isdir(dest) and os.listdir(dest)):
            raise
        # Another process (a multi-process run) placed its copy first: use that one.


# -- progress --------------------------------------------------------------------------------------------------------

def _progress(total: int | None, desc: str):
    """A tqdm bar on a terminal; plain lines otherwise (a log file gets no carriage returns)."""
    if sys.stderr.isatty():
        from tqdm import tqdm
        return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
                    leave=False, dynamic_ncols=True)
    return _Lines(total, desc)


class _Lines:
    """Progress as plain lines on stderr: one per tenth of `total` (per 32 MiB when the size is unknown)."""

    def __init__(self, total: int | None, desc: str):
        self.total, self.desc, self.done, self.shown = total, desc, 0, 0
        self._say(f"downloading {desc}" + (f" ({_mib(total)})" if total else ""))

    def update(self, n: int) -> None:
        self.done += n
        step = self.total // 10 if self.total else 32 << 20
        if step and self.done // step > self.shown:
            self.shown = self.done // step
            percent = f" ({100 * self.done // self.total}%)" if self.total else ""
            self._say(f"  {self.desc}: {_mib(self.done)}{percent}")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def _say(self, line: str) -> None:
        print(line, file=sys.stderr, flush=True)


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"
