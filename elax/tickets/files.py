"""One ticket, one file: a safetensors file holding a ticket's mask, rewound params, BatchNorm statistics and,
optionally, the weights it trained to, with metadata that says what it is. Readable without the run it came from,
and without JAX (safetensors reads numpy; `safetensors.torch` reads it too).

Tensors are named by their tree paths with '/' separators under a prefix: params/ (rewound, pruned weights exactly
0), mask/ (bool, one per params leaf), batch_stats/ (none for a model without BatchNorm), trained/params/ and
trained/batch_stats/. The metadata is one JSON document under the key "elax" (docs/tickets.md lists its fields),
with a digest of every tensor, since safetensors itself checks sizes but not contents. A path ending in ".gz" is
the same file gzip-compressed (`gunzip` gives the plain one): a sparse ticket's zeros shrink it 3-6x.
"""

import dataclasses
import gzip
import hashlib
import json
import os
import struct
import tempfile

import jax
import numpy as np
from safetensors import safe_open
from safetensors.numpy import load as load_bytes, load_file, save as save_bytes, save_file

import elax
from elax import masks as masks_lib, models
from elax.ticket import Ticket
from elax.tickets.flat import flatten, masked, unflatten

FORMAT = "elax.ticket"
FORMAT_VERSION = 1
METADATA_KEY = "elax"
TRAINED = "trained"
# Keys every file has, computed from the ticket when it is saved (a ticket's own meta cannot override them).
COMPUTED = ("format", "format_version", "elax_version", "model", "family", "num_classes", "input_shape", "level",
            "sparsity", "kept_weights", "prunable_weights", "rewind_step", "trained", "sha256")
# Keys of a results.json record that describe the ticket's training and result.
RESULT_KEYS = ("method", "seed", "dataset", "recipe_id", "test_accuracy", "test_loss", "structure",
               "source_model", "source_level", "strategy")
_EXPORT = "Export it again (python -m elax.tickets export RUN --level N FILE)."


def save(ticket: Ticket, path: str, *, trained_params=None, trained_batch_stats=None,
         result: dict | None = None) -> str:
    """Write `ticket` (params saved masked) to the safetensors file `path`, atomically; returns `path`.

    trained_params / trained_batch_stats: the weights and statistics it trained to (optional). result: its
    results.json record, or any dict with its test_accuracy, test_loss, seed, dataset, method, recipe_id, steps.
    The ticket's `meta` (e.g. `recipe`, `run`) is kept in the metadata too.
    """
    path = os.fspath(path)
    masks_lib.validate(ticket.mask, ticket.params)
    tensors = {**flatten(masked(ticket.params, ticket.mask), "params"), **flatten(ticket.mask, "mask"),
               **flatten(ticket.batch_stats, "batch_stats")}
    if trained_params is not None:
        tensors.update(flatten(trained_params, f"{TRAINED}/params"))
        tensors.update(flatten(trained_batch_stats or {}, f"{TRAINED}/batch_stats"))
    meta = _metadata(ticket, result or {}, trained_params is not None, _digest(tensors))
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp_", suffix=".safetensors")
    os.close(fd)
    try:
        header = {METADATA_KEY: json.dumps(meta, sort_keys=True, allow_nan=False)}
        if _gzipped(path):
            with open(tmp, "wb") as f:   # mtime 0: the same ticket gives the same bytes
                f.write(gzip.compress(save_bytes(tensors, metadata=header), mtime=0))
        else:
            save_file(tensors, tmp, metadata=header)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def _metadata(ticket: Ticket, result: dict, trained: bool, digest: str) -> dict:
    family = models.family_of(ticket.model)
    # The run's count where there is one: its prunable weights leave out lottery.exclude and, for N:M, the layers
    # M does not divide, which the family alone does not know.
    kept, total = ((result["kept_weights"], result["prunable_weights"]) if "prunable_weights" in result
                   else masks_lib.count(ticket.mask, family.prunable))
    own = {k: v for k, v in (ticket.meta or {}).items() if k not in COMPUTED and _is_json(v)}
    if "workdir" in own:   # load_ticket's name for the run a ticket came from
        own.setdefault("run", os.path.realpath(own.pop("workdir")))
    own.update({k: result[k] for k in RESULT_KEYS if k in result})
    if "steps" in result:
        own["trained_steps"] = result["steps"]
    return {**own, "format": FORMAT, "format_version": FORMAT_VERSION, "elax_version": elax.__version__,
            "model": ticket.model_name, "family": family.name, "num_classes": family.num_classes_of(ticket.params),
            "input_shape": list(family.input_shape_of(ticket.params)), "level": int(ticket.level),
            "sparsity": 1.0 - kept / total, "kept_weights": kept, "prunable_weights": total,
            "rewind_step": int(ticket.rewind_step), "trained": trained, "sha256": digest}


def _is_json(value) -> bool:
    try:
        json.dumps(value, allow_nan=False)
        return True
    except (TypeError, ValueError):
        return False


def _digest(tensors: dict) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        h.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        h.update(array.tobytes())
    return h.hexdigest()


def info(path: str) -> dict:
    """The metadata of the ticket file `path` (model, level, sparsity, recipe, test accuracy, ...), without
    reading its tensors; plus `tensors`: the count under each prefix."""
    meta, names = _header(path)
    parts = {}
    for name in names:
        prefix = "/".join(name.split("/")[:2]) if name.startswith(TRAINED + "/") else name.split("/")[0]
        parts[prefix] = parts.get(prefix, 0) + 1
    return {**meta, "tensors": parts}


def load(path: str) -> Ticket:
    """The Ticket in the file `path` (written by `save`); its `meta` is the file's metadata. ValueError naming the
    file for a damaged file, a safetensors file that is not a ticket, or a newer format; FileNotFoundError."""
    meta, tensors = _read(path)
    model = _model(path, meta)
    params, mask = unflatten(tensors, "params"), unflatten(tensors, "mask")
    batch_stats = unflatten(tensors, "batch_stats")
    _check_fits(path, model, meta, params=params, batch_stats=batch_stats)
    try:
        masks_lib.validate(mask, params)
    except ValueError as e:
        raise ValueError(f"{path} is damaged: {e} {_EXPORT}") from None
    return Ticket(model=model, model_name=meta["model"], mask=mask, params=jax.device_put(params),
                  batch_stats=batch_stats, level=meta["level"], rewind_step=meta["rewind_step"], meta=meta)


def load_trained(path: str) -> dict:
    """{'params', 'batch_stats'}: the trained weights in the ticket file `path`, ready for `model.apply`.
    ValueError if it holds none."""
    meta, tensors = _read(path)
    if not meta.get("trained"):
        raise ValueError(f"{path} holds no trained weights (only the ticket). Export it with them: python -m "
                         "elax.tickets export RUN --level N FILE --trained.")
    variables = {"params": unflatten(tensors, f"{TRAINED}/params"),
                 "batch_stats": unflatten(tensors, f"{TRAINED}/batch_stats")}
    _check_fits(path, _model(path, meta), meta, **variables)
    return variables


def with_meta(ticket: Ticket, **meta) -> Ticket:
    """`ticket` with `meta` added to its metadata."""
    return dataclasses.replace(ticket, meta={**(ticket.meta or {}), **meta})


def _header(path: str) -> tuple[dict, list[str]]:
    """(elax metadata, tensor names) of `path`, checked: exists, is safetensors, is a ticket of a known format."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such ticket file. Export one with python -m elax.tickets export RUN "
                                "--level N FILE.")
    try:
        if _gzipped(path):
            raw, names = _gzipped_header(path)
        else:
            with safe_open(path, framework="numpy") as f:
                raw, names = (f.metadata() or {}).get(METADATA_KEY), list(f.keys())
    except Exception as e:  # safetensors raises its own error types for every kind of damage
        raise ValueError(f"{path} is damaged or not a safetensors file ({_one_line(e)}). {_EXPORT}") from None
    if raw is None:
        raise ValueError(f"{path} is a safetensors file but not an elax ticket (no {METADATA_KEY!r} metadata). A "
                         "PyTorch state dict imports with elax.tickets.from_openlth_arrays(state, mask, MODEL).")
    try:
        meta = json.loads(raw)
        version = meta["format_version"]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path} has damaged elax metadata ({_one_line(e)}). {_EXPORT}") from None
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise ValueError(f"{path} has ticket format version {version}; this elax ({elax.__version__}) reads "
                         f"versions up to {FORMAT_VERSION}. Upgrade elax to read it.")
    missing = [k for k in _REQUIRED if k not in meta]
    if not isinstance(version, int) or missing:
        what = f"no {missing[0]!r}" if missing else f"format_version {version!r}"
        raise ValueError(f"{path} has damaged elax metadata ({what}). {_EXPORT}")
    return meta, names


_REQUIRED = ("model", "num_classes", "input_shape", "level", "rewind_step", "sha256")


def _gzipped(path: str) -> bool:
    return os.fspath(path).endswith(".gz")


def _gzipped_header(path: str) -> tuple[str | None, list[str]]:
    """(elax metadata text, tensor names) of a gzipped safetensors file: its header is an 8-byte little-endian
    length, then that many bytes of JSON (the safetensors format)."""
    with gzip.open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
    return (header.pop("__metadata__", None) or {}).get(METADATA_KEY), list(header)


def _model(path: str, meta: dict):
    """The module of the ticket's model; a family this process has not registered is named with the way out."""
    try:
        return models.get_model(meta["model"], num_classes=meta["num_classes"])
    except ValueError as e:
        raise ValueError(f"{path} holds a ticket of {meta['model']!r}, a model this process does not know ({e}) "
                         "Import the module that registers its family first.") from None


def _read(path: str) -> tuple[dict, dict]:
    """(metadata, {name: numpy array}) of the ticket file `path`, its digest checked."""
    path = os.fspath(path)
    meta, _ = _header(path)
    try:
        if _gzipped(path):
            with gzip.open(path, "rb") as f:
                tensors = load_bytes(f.read())
        else:
            tensors = load_file(path)
    except Exception as e:
        raise ValueError(f"{path} is damaged ({_one_line(e)}). {_EXPORT}") from None
    if _digest(tensors) != meta.get("sha256"):
        raise ValueError(f"{path} is damaged: its tensors do not match the digest written with them. {_EXPORT}")
    return meta, tensors


def _check_fits(path: str, model, meta: dict, **trees) -> None:
    if mismatch := models.variables_mismatch(model, tuple(meta["input_shape"]), **trees):
        collection, problem = mismatch
        raise ValueError(f"{path} does not hold a ticket of {meta['model']}: its {collection} do not fit "
                         f"({problem}). The file is damaged: {_EXPORT}")


def _one_line(error: Exception) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:160]}"
