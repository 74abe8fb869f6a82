"""elax: lottery tickets and the Elastic Lottery Ticket Hypothesis in JAX/Flax.

Submodules are imported on demand so that `import elax` stays fast:
`elax.masks`, `elax.pruning`, `elax.transfer`, `elax.runs`, `elax.data`, ...
"""

import importlib

__version__ = "0.1.0"

_SUBMODULES = (
    "checkpoint", "cli", "config", "data", "distributed", "exits", "mask_updates", "masks", "models", "optim",
    "pruning", "registry", "report", "runs", "scores", "stopping", "ticket", "tickets", "train", "transfer",
    "watchdog", "workdir",
)


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"elax.{name}")
    raise AttributeError(f"module 'elax' has no attribute {name!r}")
