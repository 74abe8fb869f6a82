"""Tickets read back from runs: the hand-off between a run and the runs built on it (ETT, baselines)."""

import os

from elax import checkpoint, masks, workdir as wd
from elax.models import get_model
from elax.ticket import Ticket


def load_ticket(workdir: str, level: int) -> Ticket:
    """The ticket of `level` of a finished or running run: mask, rewound masked params, BN statistics.

    Level 0 of an IMP run is the dense network at the rewind point.
    """
    config = wd.run_config(workdir)
    ticket_dir = wd.ticket_dir(workdir, level)
    if not os.path.isdir(ticket_dir):
        raise FileNotFoundError(f"{workdir} has no ticket for level {level}; levels present: "
                                f"{wd.levels_present(workdir)}.")
    tree = checkpoint.load_tree(ticket_dir)
    if level == 0 and config["mode"] == "imp":
        tree.update(checkpoint.load_tree(wd.rewind_dir(workdir)))
    record = wd.find_record(workdir, level) or {}
    num_classes = tree["params"]["head"]["kernel"].shape[-1]
    name = config["model"]["name"]
    return Ticket(model=get_model(name, num_classes=num_classes), model_name=name, mask=tree["mask"],
                  params=masks.apply(tree["params"], tree["mask"]), batch_stats=tree["batch_stats"], level=level,
                  rewind_step=int(tree["step"]),
                  meta={"workdir": workdir, "method": record.get("method", config["mode"]),
                        "test_accuracy": record.get("test_accuracy")})
