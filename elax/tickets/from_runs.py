"""A run's ticket with what it needs to travel: the recipe and result of its level, and the weights it trained to."""

import os

from elax import checkpoint, workdir as wd
from elax.runs.tickets import load_ticket
from elax.ticket import Ticket
from elax.tickets import files


def from_run(run: str, level: int, *, trained: bool = False) -> tuple[Ticket, dict | None, dict]:
    """(ticket, trained {'params', 'batch_stats'} or None, result record or {}) of `level` of the run `run`.

    The ticket's meta names the run and holds its recipe (`recipe`, `recipe_id`), seed and dataset; `trained`
    reads the level's final train state, which must be the one its record was measured on.
    """
    run = os.path.expanduser(run)
    ticket = load_ticket(run, level)
    config = wd.run_config(run)
    record = wd.find_record(run, level) or {}
    ticket = files.with_meta(ticket, run=os.path.realpath(run), recipe=wd.recipe(config),
                             recipe_id=config.get("recipe_id") or wd.recipe_id(config), seed=config.get("seed"),
                             dataset=config.get("data", {}).get("name"), method=record.get("method", config["mode"]))
    return ticket, (_trained(run, level, record) if trained else None), record


def _trained(run: str, level: int, record: dict) -> dict:
    if not record:
        raise ValueError(f"level {level} of {run} has not finished training (no record in {wd.RESULTS_FILE}), so "
                         "it has no trained weights yet: finish the run (run its command again), or export the "
                         "ticket alone (without --trained).")
    directory = wd.checkpoints_dir(run, level)
    if not os.path.isdir(directory):   # Orbax's manager would create it: the level would look finished
        raise FileNotFoundError(f"{directory} is missing, so level {level} of {run} has no trained weights: export "
                                "the ticket alone (without --trained), or run that run's command again to retrain it.")
    state = checkpoint.load_latest_state_tree(directory)
    if "steps" in record and int(state["step"]) != record["steps"]:
        raise ValueError(f"the last checkpoint of level {level} of {run} is at step {int(state['step'])}, but its "
                         f"record was measured at step {record['steps']}: the level was changed after it finished. "
                         "Export the ticket alone (without --trained), or train that level again.")
    return {"params": state["params"], "batch_stats": state.get("batch_stats", {})}


def export(run: str, level: int, path: str, *, trained: bool = False) -> str:
    """Write the ticket of `level` of the run `run` (with its trained weights if `trained`) to the file `path`."""
    ticket, weights, record = from_run(run, level, trained=trained)
    weights = weights or {}
    return files.save(ticket, path, trained_params=weights.get("params"),
                      trained_batch_stats=weights.get("batch_stats"), result=record)
