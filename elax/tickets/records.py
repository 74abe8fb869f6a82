"""The result of a ticket trained by hand (a notebook, another framework) recorded as a run, so that `elax.report`
puts it beside the runs of its recipe and `elax.runs.load_ticket` reads its ticket back."""

import os

from elax import checkpoint, masks, models, workdir as wd
from elax.ticket import Ticket
from elax.tickets.flat import masked

MODE = "record"   # the config.json mode of such a folder: no command trains it, and a run refuses to resume in it


def record(workdir: str, ticket: Ticket, test_accuracy: float, *, test_loss: float | None = None,
           method: str = "hand", seed: int | None = None, dataset: str | None = None, config=None,
           steps: int | None = None, **extra) -> dict:
    """Add the record of `ticket`, trained by hand to `test_accuracy` (a fraction), to WORKDIR/results.json (under
    its level, replacing one there) and save the ticket in WORKDIR/level_NN/ticket; returns the record.

    method names its series in a report ('hand (cifar_resnet_20)'); 'ett' needs the ticket's source_model,
    source_level and strategy (`transfer_ticket` puts them in its meta). config: what it was trained with (a
    ConfigDict or dict, e.g. `ctx.config`): its recipe id joins the record to runs of that recipe; without it,
    the recipe a loaded ticket file carries (`ticket.meta['recipe']`), if any. seed and dataset default to the
    config's or the ticket's. A folder records tickets of one model and recipe.
    """
    wd.check_level(ticket.level)
    if isinstance(test_accuracy, bool) or not 0 <= test_accuracy <= 1:
        raise ValueError(f"test_accuracy {test_accuracy!r} is not a fraction in [0, 1] (97.5% is 0.975).")
    ett = _ett_keys(ticket, method)
    run_config = _config(ticket, config, seed, dataset)
    _claim(workdir, run_config)
    kept, total = masks.count(ticket.mask, models.family_of(ticket.model).prunable)
    entry = {"level": ticket.level, "method": method, "model": ticket.model_name,
             "dataset": run_config["data"]["name"], "seed": run_config["seed"], "recipe_id": run_config["recipe_id"],
             "sparsity": 1.0 - kept / total, "kept_weights": kept, "prunable_weights": total,
             "test_accuracy": float(test_accuracy), "test_loss": None if test_loss is None else float(test_loss),
             "steps": steps, "rewind_step": int(ticket.rewind_step), **ett, **extra}
    checkpoint.save_tree(wd.ticket_dir(workdir, ticket.level), {
        "params": masked(ticket.params, ticket.mask), "batch_stats": ticket.batch_stats, "mask": ticket.mask,
        "step": ticket.rewind_step})
    wd.add_record(workdir, entry)
    return entry


def _config(ticket: Ticket, config, seed, dataset) -> dict:
    """The config.json of the folder: the training config given, else the recipe the ticket carries."""
    meta = ticket.meta or {}
    if config is not None:
        base = config.to_dict() if hasattr(config, "to_dict") else dict(config)
        name = base.get("model", {}).get("name", ticket.model_name)
        if name != ticket.model_name:
            raise ValueError(f"config trains {name}, but the ticket is of {ticket.model_name}: pass the config the "
                             "ticket was trained with.")
        recipe_id = wd.recipe_id(base)
    else:
        base, recipe_id = _unflatten(meta.get("recipe") or {}), meta.get("recipe_id")
    base = {**base, "mode": MODE, "model": {**base.get("model", {}), "name": ticket.model_name},
            "seed": seed if seed is not None else base.get("seed", meta.get("seed", 0)),
            "data": {**base.get("data", {})}}
    base["data"]["name"] = dataset or base["data"].get("name") or meta.get("dataset")
    return {**base, "recipe_id": recipe_id}


def _unflatten(flat: dict) -> dict:
    """{'train': {'lr': 0.1}, ...} of {'train.lr': 0.1, ...}."""
    out: dict = {}
    for key, value in flat.items():
        section, _, name = key.rpartition(".")
        (out.setdefault(section, {}) if section else out)[name] = value
    return out


def _claim(workdir: str, config: dict) -> None:
    """Write WORKDIR/config.json, or check that the folder records tickets of this model, recipe and seed."""
    path = os.path.join(workdir, wd.CONFIG_FILE)
    previous = wd.read_json(path)
    if previous is not None:
        if previous.get("mode") != MODE:
            raise ValueError(f"{workdir} holds a run of mode {previous.get('mode')!r}: record hand-trained tickets "
                             "in a folder of their own.")
        differ = [k for k in ("recipe_id", "seed") if previous.get(k) != config.get(k)]
        if previous["model"]["name"] != config["model"]["name"]:
            differ.insert(0, "model")
        if differ:
            raise ValueError(f"{workdir} records tickets of another {differ[0]} ({_get(previous, differ[0])!r}, "
                             f"this one {_get(config, differ[0])!r}): record it in a folder of its own.")
    wd.write_json(path, {**config, "workdir": os.path.realpath(workdir)})


def _get(config: dict, key: str):
    return config["model"]["name"] if key == "model" else config.get(key)


def _ett_keys(ticket: Ticket, method: str) -> dict:
    """An ETT record names its source and strategy (the report pairs it with them)."""
    if method != wd.ETT:
        return {}
    missing = [k for k in wd.ETT_KEYS if k not in (ticket.meta or {})]
    if missing:
        raise ValueError(f"method 'ett' needs the ticket's {', '.join(missing)} (elax.transfer.transfer_ticket "
                         "puts them in its meta); name another method for a ticket that was not transferred.")
    return {k: ticket.meta[k] for k in wd.ETT_KEYS}
