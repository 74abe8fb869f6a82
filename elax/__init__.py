"""elax: lottery tickets and the Elastic Lottery Ticket Hypothesis in JAX/Flax.

Submodules are imported on demand so that `import elax` stays fast:
`elax.masks`, `elax.pruning`, `elax.transfer`, `elax.runs`, `elax.data`, ...
"""

import importlib
import pkgutil

__version__ = "0.1.0"

_SUBMODULES = tuple(module.name for module in pkgutil.iter_modules(__path__))   # every elax.<name>


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"elax.{name}")
    raise AttributeError(f"module 'elax' has no attribute {name!r}")
