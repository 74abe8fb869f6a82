"""Per-epoch metrics as rows: `load_metrics` reads every level_XX/metrics.jsonl of a run or of an experiment's runs.

Each metrics line says what it belongs to (`IDENTITY`): `run`, the run's name within its experiment (`run_name`:
'seed_1/imp_cifar_resnet_20', or the folder's name for a run of its own), `workdir` (the absolute path it was
trained in), `level`, `seed`, `method` (imp, ett or the baseline's name) and `sparsity` (of the level's ticket).
Lines written before they did are filled from their folder, config.json and results.json.
"""

import json
import os
import re

from elax import workdir as wd

IDENTITY = ("run", "workdir", "level", "seed", "method", "sparsity")
_SEED_FOLDER = re.compile(r"seed_\d+")


def run_name(workdir: str) -> str:
    """A run's name within its experiment: 'seed_<s>/<run>' in a seed folder, else the folder's name (unique across
    an experiment's seed_<s>/ folders, and the same wherever the experiment is moved)."""
    path = os.path.normpath(os.path.abspath(os.path.expanduser(workdir)))
    parent, name = os.path.split(path)
    seed_folder = os.path.basename(parent)
    return f"{seed_folder}/{name}" if _SEED_FOLDER.fullmatch(seed_folder) else name


def method_of(config) -> str:
    """The method of a run's levels, from its config (a dict or ConfigDict): imp, ett, or the baseline's name."""
    mode = config["mode"]
    if mode == "transfer":
        return wd.ETT
    return config["baseline"]["method"] if mode == "baseline" else wd.IMP


def load_metrics(path: str, as_frame: bool = False):
    """The metrics lines of the run in `path`, or of every run one or two folders below it (an experiment, with or
    without seed_<s>/ folders), as rows: dicts in run, level and line order, `IDENTITY` keys first.

    Lines of older runs lack those keys: they come from the folder (run, level), config.json (workdir, seed,
    method) and the level's results.json record (sparsity; None before the level finished). A damaged line (a
    write cut by a kill) is skipped. With `as_frame`, a pandas DataFrame of the same rows (pandas required).
    """
    path = os.path.expanduser(path)
    runs = [path] if os.path.isfile(os.path.join(path, wd.CONFIG_FILE)) else [
        os.path.join(path, run) for run in wd.runs_inside(path)]
    if not runs:
        raise FileNotFoundError(f"No elax run in {path}: a run folder holds {wd.CONFIG_FILE}, an experiment's "
                                "runs are one or two folders below it.")
    rows = [row for run in runs for row in _run_rows(run)]
    return _frame(rows) if as_frame else rows


def _run_rows(run: str) -> list[dict]:
    config = wd.read_json(os.path.join(run, wd.CONFIG_FILE), default={})
    sparsity = {r["level"]: r.get("sparsity") for r in wd.load_results(run)}
    base = {"run": run_name(run), "workdir": config.get("workdir") or os.path.realpath(run),
            "seed": config.get("seed"), "method": method_of(config) if "mode" in config else None}
    rows = []
    for level in wd.levels_present(run):
        known = {**base, "level": level, "sparsity": sparsity.get(level)}
        defaults = {key: known[key] for key in IDENTITY}
        rows += [{**defaults, **line} for line in _lines(wd.metrics_path(run, level))]
    return rows


def _lines(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [line for line in map(_parse, f) if line is not None]


def _parse(text: str) -> dict | None:
    try:
        line = json.loads(text)
    except json.JSONDecodeError:
        return None
    return line if isinstance(line, dict) else None


def _frame(rows: list[dict]):
    try:
        import pandas as pd
    except ImportError:
        raise ImportError("load_metrics(..., as_frame=True) needs pandas: pip install pandas") from None
    return pd.DataFrame(rows)
