"""Loading records: the results.json files that paths name, each record validated, and the checks that refuse runs
of different recipes and one run read twice.

`series_name` lives here, below the summaries, because the read-twice check names a record's series too.
"""

from pathlib import Path

from elax import workdir as wd
from elax.workdir import ETT, ETT_KEYS, RESULTS_FILE

# The record keys a report needs (records of older runs may lack others).
REQUIRED_KEYS = ("level", "sparsity", "test_accuracy", "model", "method", "seed")
UNSTRUCTURED = "unstructured"  # the structure of records that name none


def series_name(record, with_recipe=False):
    """A series' machine-readable name, e.g. 'imp (cifar_resnet_32)' or
    'ett cifar_resnet_20→cifar_resnet_32 (append)'; a structure other than unstructured appends ' [2:4]',
    `with_recipe` appends ' [recipe <id>]'. (Figures and tables show `elax.report.labels` instead.)"""
    method, model, source, strategy, structure = describe(record)
    name = f"ett {source}→{model} ({strategy})" if method == ETT else f"{method} ({model})"
    # Tickets of different structures are different series: averaged together, an N:M curve would hide.
    if structure != UNSTRUCTURED:
        name += f" [{structure}]"
    return name + (f" [recipe {record.get('recipe_id')}]" if with_recipe else "")


# Mask-update settings a dynamic baseline's record names when not the defaults, and their short forms.
DST_SETTINGS = {"dst_every": "every", "dst_drop_fraction": "drop", "dst_end_fraction": "end"}


def describe(record):
    """(method, model, source, strategy, structure) of a record: the method with its layer distribution and
    mask-update settings when the record names them ('random-erk', 'rigl-every25'), source and strategy '' except
    for ETT, structure the record's `structure` (e.g. '2:4') or 'unstructured' (records before N:M tickets)."""
    is_ett = record["method"] == ETT
    variants = ([record["distribution"]] if record.get("distribution") else []) + [
        f"{short}{record[key]}" for key, short in DST_SETTINGS.items() if key in record]
    method = "-".join([record["method"], *variants])
    return (method, record["model"], record["source_model"] if is_ett else "",
            record["strategy"] if is_ett else "", record.get("structure") or UNSTRUCTURED)


def load_records(paths, mix_recipes=False):
    """Records from run dirs, results.json files, or dirs holding several runs.

    A file reached through two of `paths` (say a run and its parent) is read once.
    Raises FileNotFoundError when a path holds no results.json, and ValueError
    naming the file and key when a record lacks a required key, or naming the
    differing keys when the runs have different recipes (unless `mix_recipes`).
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    records, seen, files_of_recipe, file_of_result = [], set(), {}, {}
    for path in paths:
        for file in _find_results(path):
            if file.resolve() not in seen:
                seen.add(file.resolve())
                for record in _read_results(file):
                    records.append(record)
                    files_of_recipe.setdefault(record.get("recipe_id"), file)
                    _check_not_twice(record, file, file_of_result, mix_recipes)
    if len(files_of_recipe) > 1 and not mix_recipes:
        raise ValueError(_mixed_recipes_message(files_of_recipe))
    if not records:
        raise ValueError(f"{', '.join(map(str, paths))}: no finished levels yet (every results.json found is "
                         "empty). Report runs once they have finished a level.")
    return records


def _find_results(path):
    """The results.json files that `path` (file, run dir or tree of runs) names."""
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        found = sorted(path.rglob(RESULTS_FILE))
        if found:
            return found
        raise FileNotFoundError(f"no {RESULTS_FILE} found in or under {path}")
    raise FileNotFoundError(f"no such file or directory: {path}")


def _read_results(file):
    """The validated records of one results.json file."""
    records = wd.read_json(str(file))
    if not isinstance(records, list):
        raise ValueError(f"{file}: expected a JSON list of records")
    for i, record in enumerate(records):
        _validate(record, file, i)
    return records


def _validate(record, file, index):
    """Raises ValueError naming `file` when `record` lacks a key or is out of range."""
    if not isinstance(record, dict):
        raise ValueError(f"{file}: record {index} is not a JSON object")
    keys = REQUIRED_KEYS + (ETT_KEYS if record.get("method") == ETT else ())
    for key in keys:
        if key not in record:
            raise ValueError(f"{file}: record {index} is missing required key {key!r}")
    # Fractions, not percentages; sparsity 1 would mean 0% remaining, which the log-scale plot cannot show.
    for key, top in (("sparsity", ")"), ("test_accuracy", "]")):
        value = record[key]
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not (number and (0 <= value < 1 or top == "]" and value == 1)):
            raise ValueError(f"{file}: record {index} has {key} {value!r} outside [0, 1{top} (a fraction); the "
                             "file is damaged or was edited: restore it, or delete it and run that run's command "
                             "again to rebuild it")


def _check_not_twice(record, file, file_of_result, mix_recipes):
    """Two records of one series, level and seed from two files are one run read twice (a copy, or two runs with
    the same seed): averaged, they would pass for two replicates. Of two recipes, they are two runs that differ in
    recipe (never averaged together), and the message says so."""
    key = (series_name(record, with_recipe=mix_recipes), record["level"], record.get("seed"))
    other, other_recipe = file_of_result.setdefault(key, (file, record.get("recipe_id")))
    if other == file:
        return
    if other_recipe != record.get("recipe_id"):
        raise ValueError(_mixed_recipes_message({other_recipe: other, record.get("recipe_id"): file}))
    raise ValueError(f"{other} and {file} both hold level {record['level']} of {key[0]} with seed {key[2]}: "
                     "averaged they would pass for two replicates. Report one of them (runs of other seeds "
                     "differ in config.seed).")


def _mixed_recipes_message(files_of_recipe):
    (id_a, file_a), (id_b, file_b) = list(files_of_recipe.items())[:2]
    config_a = wd.read_json(str(file_a.parent / wd.CONFIG_FILE))
    config_b = wd.read_json(str(file_b.parent / wd.CONFIG_FILE))
    if config_a is not None and config_b is not None:
        differences = "; ".join(wd.recipe_differences(config_a, config_b)) or "no recipe key"
    else:
        differences = "unknown: a run has no config.json"
    return (f"the runs have {len(files_of_recipe)} different recipes, which are never averaged together: "
            f"{file_a} has recipe {id_a}, {file_b} has {id_b} (they differ in {differences}). Report runs of one "
            "recipe, or pass --mix-recipes to show each recipe as series of its own.")
