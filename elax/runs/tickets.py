"""Tickets read back from runs: the hand-off between a run and the runs built on it (ETT, baselines)."""

import os

from elax import checkpoint, masks, workdir as wd
from elax.models import family_of, get_model
from elax.ticket import Ticket


def load_ticket(workdir: str, level: int) -> Ticket:
    """The ticket of `level` of a finished or running run: mask, rewound masked params, BN statistics.

    Level 0 of an IMP run is the dense network at the rewind point. A damaged ticket of an IMP run is rebuilt
    from what it is made of (the level's mask, kept in its checkpoints, and the rewind state).
    """
    wd.check_level(level)
    workdir = os.path.expanduser(workdir)
    config = wd.run_config(workdir)
    ticket_dir = wd.ticket_dir(workdir, level)
    if level not in wd.levels_present(workdir):
        raise FileNotFoundError(f"{workdir} has no level {level}; levels present: {wd.levels_present(workdir)}.")
    imp = config["mode"] == wd.IMP
    retrain = f"Delete {wd.level_dir(workdir, level)} and run that run's command again to retrain level {level}."
    try:
        tree = checkpoint.load_tree(ticket_dir, retrain)
    except (checkpoint.DamagedCheckpoint, FileNotFoundError):   # a missing ticket is rebuilt as a damaged one
        if not imp:
            raise
        tree = _rebuild_imp_ticket(workdir, level, retrain)
    if level == 0 and imp:
        tree.update(load_rewind(workdir))
    record = wd.find_record(workdir, level) or {}
    name = config["model"]["name"]
    num_classes = family_of(name).num_classes_of(tree["params"])
    return Ticket(model=get_model(name, num_classes=num_classes), model_name=name, mask=tree["mask"],
                  params=masks.apply(tree["params"], tree["mask"]), batch_stats=tree.get("batch_stats", {}),
                  level=level,
                  rewind_step=int(tree["step"]),
                  meta={"workdir": workdir, "method": record.get("method", config["mode"]),
                        "test_accuracy": record.get("test_accuracy")})


def load_rewind(workdir: str) -> dict:
    """The rewind state {params, batch_stats, step} of an IMP run; a damaged one says how to rebuild it."""
    return checkpoint.load_tree(wd.rewind_dir(workdir), (
        "Run that IMP run's command again: it rebuilds the rewind state by replaying level 0 to the rewind step "
        "(finished levels are kept)."))


def _rebuild_imp_ticket(workdir: str, level: int, retrain: str) -> dict:
    """An IMP ticket is the level's mask (in every checkpoint of the level) times the rewind state."""
    try:
        mask = checkpoint.load_latest_state_tree(wd.checkpoints_dir(workdir, level))["mask"]
    except (checkpoint.DamagedCheckpoint, FileNotFoundError):
        raise checkpoint.DamagedCheckpoint(f"{wd.ticket_dir(workdir, level)} is missing or damaged and cannot be "
                                           f"rebuilt (its level has no readable checkpoint). {retrain}") from None
    rewind = load_rewind(workdir)
    tree = {"params": masks.apply(rewind["params"], mask), "batch_stats": rewind.get("batch_stats", {}),
            "mask": mask, "step": rewind["step"]}
    checkpoint.save_tree(wd.ticket_dir(workdir, level), tree)
    if wd.is_primary():
        print(f"note: {wd.ticket_dir(workdir, level)} was missing or damaged: rebuilt from level {level}'s "
              "checkpoint and the rewind state, and saved again.", flush=True)
    return tree
