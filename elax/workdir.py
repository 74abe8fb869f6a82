"""The on-disk layout of an elax run and the schema of its records: the one module that knows file names.

    WORKDIR/
      config.json       the run's config (plus its `recipe_id`, `workdir` and `dataset`); a resumed run must match it
      results.json      one record per finished level (a JSON list, sorted by level)
      rewind/           IMP runs: Orbax tree {params, batch_stats, step} of level 0 at the rewind step r
      level_XX/
        ticket/         Orbax tree {params, batch_stats, mask, step}: the ticket this level starts from
        checkpoints/    Orbax CheckpointManager: the level's two latest train states (the resume points)
        metrics.jsonl   one line per epoch: losses, accuracies, learning rate, time

What a config key is to a run (part of its recipe, resumable, a path) is declared beside its default in
`elax.config`. No JAX here, so that `elax.report` can read runs without it. Every file is written atomically.
"""

import contextlib
import hashlib
import json
import numbers
import os
import shutil
import tempfile

from elax import config as config_lib
from elax.data import catalog

CONFIG_FILE = "config.json"
RESULTS_FILE = "results.json"
METRICS_FILE = "metrics.jsonl"
REWIND_DIR = "rewind"
TICKET_DIR = "ticket"
CHECKPOINTS_DIR = "checkpoints"
LOCK_FILE = ".lock"

# The method of IMP levels; the other tickets of a report join the IMP level they come from.
IMP = "imp"
ETT = "ett"
# The keys ETT records have besides those of every record.
ETT_KEYS = ("source_model", "source_level", "strategy")


# -- paths -------------------------------------------------------------------------------------------------------

def check_level(level) -> None:
    """Levels are whole numbers (0 = the dense network): a string or float would fail later, inside a path."""
    if isinstance(level, bool) or not isinstance(level, numbers.Integral):
        raise TypeError(f"level must be a whole number (0 = the dense network), not {level!r}.")


def level_dir(workdir: str, level: int) -> str:
    return os.path.join(workdir, f"level_{level:02d}")


def ticket_dir(workdir: str, level: int) -> str:
    return os.path.join(level_dir(workdir, level), TICKET_DIR)


def checkpoints_dir(workdir: str, level: int) -> str:
    return os.path.join(level_dir(workdir, level), CHECKPOINTS_DIR)


def metrics_path(workdir: str, level: int) -> str:
    return os.path.join(level_dir(workdir, level), METRICS_FILE)


def rewind_dir(workdir: str) -> str:
    return os.path.join(workdir, REWIND_DIR)


def levels_present(workdir: str) -> list[int]:
    """Levels that have a directory in `workdir`, ascending."""
    names = os.listdir(workdir) if os.path.isdir(workdir) else []
    return sorted(int(n[6:]) for n in names if n.startswith("level_") and n[6:].isdigit())


# -- JSON files --------------------------------------------------------------------------------------------------

# In a multi-process run (elax.distributed) process 0 alone writes the workdir's files (config, records, metrics,
# locks); the other processes read them and take part in the Orbax checkpoints only.
_primary = True


def set_primary(primary: bool) -> None:
    global _primary
    _primary = primary


def is_primary() -> bool:
    return _primary


def write_json(path: str, obj) -> None:
    """Write `obj` as strict JSON atomically (temp file + rename), so a kill never leaves half a file. A no-op
    outside process 0 of a multi-process run."""
    if not _primary:
        return
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp_", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True, allow_nan=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def read_json(path: str, default=None):
    """The strict JSON in `path`, or `default` if there is no such file; a damaged file is a one-line error naming
    it. NaN and Infinity (which Python's json reads) count as damage: `write_json` could not write them back."""
    if not os.path.exists(path):
        return default
    try:
        with open(path) as f:
            return json.load(f, parse_constant=_not_strict_json)
    except (json.JSONDecodeError, UnicodeDecodeError, _NotStrictJSON) as e:
        rebuilt = _REBUILT_BY_A_RERUN.get(os.path.basename(path), "")
        raise ValueError(f"{path} is damaged ({e}). Restore it from a copy, or delete it and run the run's command "
                         f"again{rebuilt}.") from None


class _NotStrictJSON(ValueError):
    pass


def _not_strict_json(name: str):
    raise _NotStrictJSON(f"{name} is not a JSON number")


_REBUILT_BY_A_RERUN = {RESULTS_FILE: ": each finished level's record is taken again from its last checkpoint",
                       CONFIG_FILE: ": it is written again from that command's config"}


# -- config and recipe ---------------------------------------------------------------------------------------------

def flatten(d: dict, prefix: str = "") -> dict:
    """{'train.lr': 0.1, ...} of a nested config dict; tuples become lists, as in JSON."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = _json(v)
    return out


def recipe(config: dict) -> dict:
    """The result-changing settings of a config dict ({'train.lr': 0.1, ...}): its keys declared part of the
    recipe in `elax.config` (those of the streamed pipeline only for streamed runs; keys added since runs were
    first made only when set, so that those runs keep their recipe ids)."""
    flat = flatten(config)
    streamed = catalog.streams(flat.get("data.source"), flat.get("data.name"))
    return {name: flat.get(name) for name, key in config_lib.KEYS.items()
            if key.recipe == config_lib.ALWAYS or (key.recipe == config_lib.STREAMED and streamed)
            or (key.recipe == config_lib.IF_SET and flat.get(name, _json(key.default)) != _json(key.default))}


def _json(value):
    """A config value as JSON holds it: tuples are lists, at any depth (lottery.layer_fractions is pairs)."""
    return [_json(item) for item in value] if isinstance(value, (tuple, list)) else value


def config_value(value):
    """A config value from JSON, as a config holds it: lists are tuples, at any depth (the inverse of `_json`)."""
    return tuple(config_value(item) for item in value) if isinstance(value, list) else value


def recipe_id(config: dict) -> str:
    """A short hash of `recipe(config)`: runs with equal ids were trained the same way."""
    text = json.dumps(recipe(config), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def recipe_differences(a: dict, b: dict) -> list[str]:
    """'train.lr: 0.1 vs 0.05' for every recipe key on which config dicts `a` and `b` differ."""
    ra, rb = recipe(a), recipe(b)
    keys = list(ra) + [k for k in rb if k not in ra]
    fa, fb = flatten(a), flatten(b)   # a key only one recipe holds (pad_to 0 is no key) has its config value
    return [f"{k}: {fa.get(k)!r} vs {fb.get(k)!r}" for k in keys if ra.get(k) != rb.get(k)]


def run_config(workdir: str, what: str = "") -> dict:
    """The config.json of an elax run directory; a clear error naming `what` pointed at it if there is none."""
    config = read_json(os.path.join(workdir, CONFIG_FILE))
    if config is None:
        inside = runs_inside(workdir)
        advice = (f"It holds the runs {', '.join(inside[:4])}{', ...' if len(inside) > 4 else ''}: pass one of "
                  "them." if inside else "Pass the --workdir of an IMP run (python main.py --config "
                  "configs/cifar_resnet.py ...).")
        raise FileNotFoundError(f"{what + ' ' if what else ''}{workdir!r} is not an elax run directory (no "
                                f"{CONFIG_FILE}). {advice}")
    return config


def check_placement(workdir: str, mode: str) -> None:
    """Refuse a workdir inside another run, an experiment in a run's folder, and a single run in an experiment's
    folder: their files would mix (and a report of the folder would count runs twice)."""
    parent = os.path.dirname(os.path.abspath(workdir))
    while parent != os.path.dirname(parent):
        if os.path.isfile(os.path.join(parent, CONFIG_FILE)):
            raise ValueError(f"--workdir {workdir} is inside the run {parent}. Pass a folder outside it.")
        parent = os.path.dirname(parent)
    own = read_json(os.path.join(workdir, CONFIG_FILE))
    if mode == "experiment" and own is not None:
        raise ValueError(f"--workdir {workdir} holds a run (mode {own.get('mode')}), not an experiment. Pass a new "
                         "folder (an experiment reuses finished runs only in its own folder).")
    inside = runs_inside(workdir)
    if mode != "experiment" and own is None and inside:
        raise ValueError(f"--workdir {workdir} holds an experiment's runs ({', '.join(inside[:2])}, ...); a "
                         f"run of mode {mode} needs a folder of its own. Pass one of those runs or a new folder.")


def runs_inside(folder: str) -> list[str]:
    """Run directories one or two levels below `folder` (an experiment's seed_<s>/<run>), relative, sorted."""
    import glob
    found = glob.glob(os.path.join(glob.escape(folder), "*", CONFIG_FILE)) + glob.glob(
        os.path.join(glob.escape(folder), "*", "*", CONFIG_FILE))
    return sorted(os.path.relpath(os.path.dirname(path), folder) for path in found)


def _same_value(key: str, old, new, old_workdir: str | None, workdir: str) -> bool:
    """Config values alike; the run a run builds on is the same however its path is spelt (relative or absolute,
    through links), and when it sits where it sat relative to the workdir (`old_workdir` then, `workdir` now), so
    that an experiment resumes under another spelling of its --workdir and in a folder moved or copied elsewhere."""
    if old == new:
        return True
    if not config_lib.KEYS[key].run_path or not (isinstance(old, str) and isinstance(new, str) and old and new):
        return False
    old, new = os.path.realpath(os.path.expanduser(old)), os.path.realpath(os.path.expanduser(new))
    return old == new or bool(old_workdir) and (
        os.path.relpath(old, old_workdir) == os.path.relpath(new, os.path.realpath(workdir)))


def claim(workdir: str, config: dict, dataset: dict | None = None) -> None:
    """Create `workdir` for a run of `config` (a plain dict), or check that the run in it has a compatible one,
    trained on data of the same shape (`dataset`: class and image counts, a digest of the class names). The
    config.json written holds the config plus the recipe's id, where the run is (to recognise a moved run) and
    what its data held (a folder's content may change under an unchanged config)."""
    path = os.path.join(workdir, CONFIG_FILE)
    previous = read_json(path)
    if previous is not None:
        _check_same_dataset(workdir, previous.get("dataset"), dataset)
        old, new = flatten(previous), flatten(config)
        unread = config_lib.unread_prefixes(config.get("mode"))
        # Keys only one side has were added to (or removed from) the schema since: they had their default.
        changed = [k for k in sorted(set(old) & set(new)) if k in config_lib.KEYS and not
                   config_lib.KEYS[k].resumable and not k.startswith(unread)
                   and not _same_value(k, old[k], new[k], previous.get("workdir"), workdir)]
        if changed:
            diffs = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:5])
            raise ValueError(
                f"{workdir} holds a run with a different config ({diffs}). Finished work there is kept: "
                "resume it with its original settings, or pass a new --workdir for the new settings.")
    write_json(path, {**config, "recipe_id": recipe_id(config), "workdir": os.path.realpath(workdir),
                      **({"dataset": dataset} if dataset else {})})


def _check_same_dataset(workdir: str, old: dict | None, new: dict | None) -> None:
    """Refuse to resume on data that changed (a class folder removed, images added): checkpoints would not fit,
    or would silently mean other classes."""
    if not (old and new) or old == new:
        return
    changed = "; ".join(f"{key}: {old.get(key)!r} -> {new.get(key)!r}" for key in sorted(set(old) | set(new))
                        if old.get(key) != new.get(key))
    raise ValueError(f"{workdir} was trained on other data than the data it reads now ({changed}). Finished work "
                     "there is kept: restore the data it was trained on, or pass a new --workdir for this data.")


class WorkdirBusy(RuntimeError):
    """Another process runs in this workdir."""


@contextlib.contextmanager
def lock(workdir: str):
    """Hold WORKDIR/.lock (fcntl) while a run works there: a second process exits at once, naming the holder's
    PID. The kernel drops the lock when its process dies, so a killed run leaves no stale lock."""
    import fcntl
    os.makedirs(workdir, exist_ok=True)
    if not _primary:  # process 0 holds the lock for the whole multi-process run
        yield
        return
    path = os.path.join(workdir, LOCK_FILE)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            raise WorkdirBusy(f"{workdir} is in use by another elax process (PID {holder}). Wait for it to finish "
                              "or stop it; a killed process releases the workdir by itself.") from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()


@contextlib.contextmanager
def held(workdir: str, trained=levels_present):
    """Lock `workdir` for the duration of a run. A run that fails before it has trained anything there
    (`trained(workdir)` is empty) leaves a workdir it created as it found it: absent, so the corrected command
    starts afresh."""
    existed = os.path.exists(workdir)
    if existed and not os.path.isdir(workdir):
        raise ValueError(f"--workdir {workdir} is a file, not a directory. Pass a directory path.")
    try:
        with lock(workdir):
            yield
    except BaseException:
        if _primary and not existed and not trained(workdir):
            shutil.rmtree(workdir, ignore_errors=True)
        raise


@contextlib.contextmanager
def claimed(workdir: str, config: dict, dataset: dict | None = None):
    """`held`, with `workdir` claimed for `config` and `dataset` (a run with another config or data is refused)."""
    with held(workdir):
        claim(workdir, config, dataset)
        yield


def files_below(workdir: str) -> list[str]:
    """Every file under `workdir` but its lock: what an experiment's runs have written."""
    return [os.path.join(root, name) for root, _, names in os.walk(workdir) for name in names
            if os.path.join(root, name) != os.path.join(workdir, LOCK_FILE)]


def finished(workdir: str, level: int) -> bool:
    """Whether `level` is done: its record exists and so does its level directory (delete that directory to
    train the level again)."""
    return find_record(workdir, level) is not None and os.path.isdir(checkpoints_dir(workdir, level))


# -- records -----------------------------------------------------------------------------------------------------

def load_results(workdir: str) -> list[dict]:
    return read_json(os.path.join(workdir, RESULTS_FILE), default=[])


def find_record(workdir: str, level: int) -> dict | None:
    return next((r for r in load_results(workdir) if r.get("level") == level), None)


def add_record(workdir: str, record: dict) -> None:
    """Add (or replace) the record of `record['level']` in WORKDIR/results.json."""
    records = [r for r in load_results(workdir) if r.get("level") != record["level"]] + [record]
    write_json(os.path.join(workdir, RESULTS_FILE), sorted(records, key=lambda r: r["level"]))


def imp_levels(records: list[dict], minimum: int = 0) -> list[int]:
    """The finished IMP levels >= `minimum` among `records`, ascending."""
    return sorted(r["level"] for r in records if r.get("method") == IMP and r["level"] >= minimum)


def summary_line(record: dict) -> str:
    return (f"level {record['level']:2d} | {record['method']:<9} | {record['model']} | sparsity "
            f"{record['sparsity']:7.2%} | test accuracy {record['test_accuracy']:7.2%}")
