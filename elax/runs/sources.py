"""Helpers for runs built on another run (ETT on a source IMP run, baselines on a reference IMP run)."""

import ml_collections

from elax import workdir as wd


def source_run(workdir: str, what: str) -> tuple[dict, list[dict]]:
    """(config, results) of a finished or running run that another run builds on; clear error if absent."""
    return wd.run_config(workdir, what), wd.load_results(workdir)


def inherit_recipe(config: ml_collections.ConfigDict, source_config: dict, what: str,
                   log=print) -> ml_collections.ConfigDict:
    """`config` with the recipe (`workdir.RECIPE_KEYS`, the streamed pipeline's settings, the padding) of the run it
    builds on: E-LTH trains a transferred or baseline ticket exactly like an IMP level of that run, so the two never
    differ in recipe. A `data.dir` given here wins (the data may have moved); the keys that change are logged."""
    config = config.copy_and_resolve_references()
    source = wd.flatten(source_config)
    changed = []
    for key in wd.RECIPE_KEYS + wd.STREAM_RECIPE_KEYS + wd.PAD_RECIPE_KEYS + (() if config.data.dir else ("data.dir",)):
        if key not in source:  # a key added to the schema after the source ran: its default
            continue
        section, name = key.split(".")
        value = tuple(source[key]) if isinstance(source[key], list) else source[key]
        if config[section][name] != value:
            changed.append(f"{key}={value!r}")
            config[section][name] = value
    if changed:
        log(f"Recipe of the {what}: {', '.join(changed)}")
    return config


def select_levels(requested, records, minimum: int = 0) -> list[int]:
    """The `requested` levels (all finished IMP levels >= minimum if empty); error naming unfinished ones."""
    finished = wd.imp_levels(records, minimum)
    levels = list(requested) or finished
    missing = [level for level in levels if level not in finished]
    if missing:
        raise ValueError(f"Levels {missing} are not finished in the source run; finished levels: {finished}.")
    return levels


def imp_record(records: list[dict], level: int) -> dict:
    return next(r for r in records if r["level"] == level and r["method"] == wd.IMP)
