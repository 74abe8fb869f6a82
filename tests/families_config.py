"""configs/quickstart.py with the tests' model families registered (tests/plain_family.py, tests/toy_family.py), on a
plain MLP unless --config.model.name says otherwise: for command-line tests whose point is processes, signals and
sharding rather than convolutions, so that their runs compile in about a second (main.py puts this file's folder
on the import path)."""

import importlib.util
import os

import plain_family  # noqa: F401  (registers the "plain" family in main.py's process)
import toy_family  # noqa: F401  (registers the "toy" family: dense layers with BatchNorm)

_QUICKSTART = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "quickstart.py")


def get_config():
    spec = importlib.util.spec_from_file_location("quickstart", _QUICKSTART)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    config.model.name = "plain_1-1_w32-32"
    return config
