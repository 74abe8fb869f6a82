"""Helpers for runs built on another run (ETT on a source IMP run, baselines on a reference IMP run)."""

import ml_collections

from elax import config as config_lib, workdir as wd


def source_run(workdir: str, what: str) -> tuple[dict, list[dict]]:
    """(config, results) of the IMP run (finished or running) that another run builds on; clear error if it is
    absent or another kind of run."""
    config = wd.run_config(workdir, what)
    mode = config.get("mode", "imp")
    if mode != "imp":
        raise ValueError(f"{what} {workdir} is a {mode} run; its tickets come from an IMP run. Pass the --workdir "
                         "of an IMP run (of an experiment: WORKDIR/seed_<s>/imp_<model>).")
    return config, wd.load_results(workdir)


def config_of(workdir: str) -> ml_collections.ConfigDict:
    """The config a run was made with, as a config to change and run again: the defaults overlaid with its
    config.json (keys added to the schema since keep their defaults, which the run had)."""
    return overlaid(wd.flatten(wd.run_config(workdir)))


def overlaid(values: dict) -> ml_collections.ConfigDict:
    """The default config with `values` ({"train.lr": 0.1, "seed": 3, ...}, as JSON holds them) set; keys that
    are not in the schema are left out."""
    config = config_lib.default_config()
    for key, value in values.items():
        if key in config_lib.KEYS:
            section, _, name = key.rpartition(".")
            (config[section] if section else config)[name] = wd.config_value(value)
    return config


def inherit_recipe(config: ml_collections.ConfigDict, source_config: dict, what: str,
                   log=print) -> ml_collections.ConfigDict:
    """`config` with the recipe (every key `elax.config` declares part of one) of the run it builds on: E-LTH trains
    a transferred or baseline ticket exactly like an IMP level of that run, so the two never differ in recipe. A
    `data.dir` given here wins (the data may have moved); the keys that change are logged."""
    config = config.copy_and_resolve_references()
    source = wd.flatten(source_config)
    changed = []
    keys = [k for k, key in config_lib.KEYS.items() if key.recipe] + ([] if config.data.dir else ["data.dir"])
    for key in keys:
        # A key added to the schema after the source ran had its default there.
        value = source.get(key, config_lib.KEYS[key].default)
        section, name = key.split(".")
        value = wd.config_value(value)
        if config[section][name] != value:
            changed.append(f"{key}={value!r}")
            config[section][name] = value
    if changed:
        log(f"Recipe of the {what}: {', '.join(changed)}")
    if source.get("seed", config.seed) != config.seed:   # a choice (replicates of one reference), but say so
        log(f"note: seed {config.seed} differs from the {what}'s seed {source['seed']}; a report's claims pair runs "
            f"by seed (config.seed={source['seed']} pairs this run with that one).")
    return config


def select_levels(requested, source_config: dict, records, what: str, key: str, minimum: int = 0,
                  log=print) -> list[int]:
    """The `requested` levels of the IMP run `what` (config key `key`), ascending and each once; all its finished
    levels >= `minimum` if none are requested. Clear errors for levels it lacks, or if it has none."""
    finished = wd.imp_levels(records, minimum)
    if not finished:
        raise ValueError(f"{what} has no finished IMP levels{f' from {minimum} on' if minimum else ''} yet. Finish "
                         "that run first (run its command again: it resumes), then start this one.")
    if not requested:
        planned = source_config.get("lottery", {}).get("levels", 0)
        if finished[-1] < planned:
            log(f"{what} has finished level{'s' if len(finished) > 1 else ''} {_span(finished)} of "
                f"{_span([minimum, planned])}: taking {'those' if len(finished) > 1 else 'it'}. Run this command "
                "again once it has finished more, and the new levels are added.")
        return finished
    bad = [level for level in requested if isinstance(level, bool) or not isinstance(level, int)]
    if bad:
        raise ValueError(f"{key}: {bad[0]!r} is not a level number; give whole numbers, e.g. {key}='(1,2)'.")
    below = [level for level in requested if level < minimum]
    if below:
        why = "is the dense network, which baselines do not prune" if below[0] == 0 else "does not exist"
        raise ValueError(f"{key}: level {below[0]} {why}; levels start at {minimum} (finished: {finished}).")
    levels = sorted(set(requested))
    missing = [level for level in levels if level not in finished]
    if missing:
        raise ValueError(f"{key}: levels {missing} are not finished in {what}; finished levels: {finished}.")
    return levels


def _span(levels) -> str:
    return str(levels[0]) if len(levels) == 1 else f"{levels[0]}-{levels[-1]}"


def imp_record(records: list[dict], level: int) -> dict:
    return next(r for r in records if r["level"] == level and r["method"] == wd.IMP)


def check_same_classes(ticket, ctx, what: str) -> None:
    """A ticket keeps its classifier: the run built on it must see the classes its source was trained on."""
    source_classes = ticket.model.num_classes
    if source_classes != ctx.num_classes:
        d = ctx.config.data
        raise ValueError(f"{what} was trained on {source_classes} classes, this run's data ({d.name}"
                         f"{f' in {d.dir}' if d.dir else ''}) has {ctx.num_classes}: a ticket keeps its classifier. "
                         "Train on the source's data (config.data.dir), with the same classes.")
