"""Shared fixtures: tiny models, data and IMP runs. Compilation dominates on CPU, so the suite shares one
persistent JAX compilation cache (also with the CLI subprocesses it starts) and runs each IMP run once."""

import fcntl
import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Before JAX is imported: it reads these at import time, and subprocesses inherit them.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(ROOT, ".jax_cache"))
# Every program, however quick to compile: the suite starts many processes (xdist workers, CLI and multi-process
# runs) that share many small ones (cold suite 5:03 -> 4:48, 1,137 cache entries instead of 196).
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
# Compiling dominates the suite on CPU and its tests run few steps: XLA's backend optimisation level 1 cut a cold
# run of test_stack.py from 80 to 62 s of CPU. Results may differ from a default build in the last bits; tests
# compare runs made under the same flags (subprocesses inherit them; the opt-in flags test sets its own).
from elax.cli import (add_xla_flag, collect_garbage_less_often,  # noqa: E402  (imports no JAX)
                      use_deterministic_gpu_kernels)
add_xla_flag("--xla_backend_optimization_level", "1")
# Deterministic GPU kernels (config train.deterministic), so that "a resumed run ends identical" holds on GPUs
# too (subprocesses inherit it); CPU kernels are deterministic anyway and ignore the flag.
use_deterministic_gpu_kernels()

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from elax import runs  # noqa: E402
from elax import workdir as wd  # noqa: E402
from elax import data  # noqa: E402
from elax.data import Dataset  # noqa: E402
from elax.models import get_model, init_variables, variable_shapes  # noqa: E402
collect_garbage_less_often()   # after the imports, as main.py runs do

# The tiny IMP recipe: the quickstart config (digits) with these overrides. The CLI tests pass the same ones, so
# their subprocesses compile nothing the in-process runs have not already put in the cache.
TINY_OVERRIDES = {
    "mode": "imp", "model.name": "cifar_resnet_14_4", "train.epochs": 2, "train.batch_size": 128,
    "train.milestones": (1,), "lottery.levels": 3, "lottery.prune_fraction": 0.2, "lottery.rewind_steps": 5,
    "progress": False, "train.checkpoint_every_secs": 0.0,   # a checkpoint every epoch: resume tests need them
}


def quickstart_config():
    """A fresh get_config() of configs/quickstart.py, as shipped."""
    spec = importlib.util.spec_from_file_location("quickstart", os.path.join(ROOT, "configs", "quickstart.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def tiny_config(**overrides):
    """configs/quickstart.py with TINY_OVERRIDES, then `overrides` ("section.key": value)."""
    config = quickstart_config()
    for key, value in {**TINY_OVERRIDES, **overrides}.items():
        *sections, name = key.split(".")
        node = config
        for section in sections:
            node = node[section]
        node[name] = value
    return config


def tiny_cli_args(config_file=os.path.join(ROOT, "configs", "quickstart.py"), **overrides):
    """The command-line flags that give `tiny_config(**overrides)` (of another `config_file`: its config)."""
    items = {**TINY_OVERRIDES, **overrides}
    return ["--config", config_file] + [
        f"--config.{key}={str(value).lower() if isinstance(value, bool) else value}" for key, value in items.items()]


@pytest.fixture(scope="session")
def imp_run(tmp_path_factory):
    """(workdir, records) of the tiny IMP run on cifar_resnet_14_4: 3 levels, rewind to step 5 (mid-epoch).
    Trained once per suite: the first xdist worker to ask trains it in their shared temporary folder while the
    others wait, then read its records (each worker had trained its own, often several at once). Read-only."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        workdir = str(tmp_path_factory.mktemp("imp"))
        return workdir, runs.run_imp(tiny_config(), workdir, log=lambda _: None)
    workdir = str(tmp_path_factory.getbasetemp().parent / "imp")   # basetemp: this worker's folder in the shared one
    with open(f"{workdir}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.exists(f"{workdir}.done"):   # not run_imp again: it would claim a folder that tests read
            runs.run_imp(tiny_config(), workdir, log=lambda _: None)
            open(f"{workdir}.done", "w").close()
    return workdir, wd.load_results(workdir)

TINY_SHAPE = (8, 8, 3)


def synthetic_dataset(num_train: int = 80, num_test: int = 13, seed: int = 0) -> Dataset:
    """Random uint8 8x8x3 images, 10 classes; test size not a multiple of small eval batches."""
    return data.synthetic(num_train, num_test, TINY_SHAPE, seed=seed)


@pytest.fixture(scope="session")
def tiny_dataset() -> Dataset:
    return synthetic_dataset()


def plain_training(dataset: Dataset, tx, *, fraction: float, prunable=None, schedule=None, augment: bool = False,
                   **trainer_options):
    """plain_1-1_w16-16 (tests/plain_family.py, no BatchNorm) with `fraction` of its weights pruned by magnitude,
    its Trainer on one device (batch 8, 10 steps an epoch) and `dataset` on that device: (trainer, state, data)."""
    from elax import optim, masks, pruning, train
    import plain_family  # noqa: F401  (registers the "plain" family)
    model, mesh = get_model("plain_1-1_w16-16"), train.make_mesh(jax.devices()[:1])
    params = init_variables(model, jax.random.key(0), TINY_SHAPE)["params"]
    mask = pruning.prune_magnitude(params, masks.build(params), fraction, prunable or pruning.default_prunable)
    trainer = train.Trainer(model=model, tx=tx, schedule=schedule or optim.multistep(0.05, 10), mesh=mesh,
                            batch_size=8, steps_per_epoch=10, seed=0, augment=augment, eval_batch_size=4,
                            **trainer_options)
    return trainer, train.create_state(params, {}, mask, tx), data.put_on_devices(dataset, mesh)


def random_variables(model, input_shape, seed: int = 0) -> dict:
    """Variables of `model`'s shapes on `input_shape`, drawn by numpy (standard normal): for tests of where values
    move, which need distinct values but not the model's init (compiling an init is their slow part)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(s.dtype), variable_shapes(model, input_shape))


@pytest.fixture(scope="session")
def resnet8_variables():
    """{'params', 'batch_stats'} of cifar_resnet_8_4 from init_variables(key 0) on 8x8x3 inputs."""
    return init_variables(get_model("cifar_resnet_8_4"), jax.random.key(0), TINY_SHAPE)


# Files in decreasing order of wall time (a cold run on 2 cores, 2026-12-07): xdist hands files out in collection
# order (with --no-loadscope-reorder; by default it orders them by test count), so the longest start first and the
# short ones fill the end. test_runs.py trains imp_run first; test_stream.py meets it a few tests in.
_LONGEST_FIRST = ("test_runs.py", "test_stream.py", "test_multihost.py", "test_cli.py", "test_probes.py",
                  "test_train.py", "test_lottery.py", "test_scores.py", "test_families.py", "test_vit_mlp.py",
                  "test_sparse.py", "test_published_tickets.py", "test_docs.py", "test_benchmark.py",
                  "test_ticket_files.py", "test_models.py", "test_stack.py", "test_transfer.py", "test_data.py",
                  "test_plain_family.py", "test_report.py")


def pytest_collection_modifyitems(items):
    def rank(item):
        name = item.path.name
        return _LONGEST_FIRST.index(name) if name in _LONGEST_FIRST else len(_LONGEST_FIRST)

    items.sort(key=rank)   # stable: each file's tests keep their order
