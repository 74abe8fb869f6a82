"""What `main.py` runs: the mode of the config (`elax.runs.MODES`), resumable in its workdir, with every failure a
researcher can fix reported as one line and an exit code (`elax.exits`).

Imports no JAX at module level: main.py imports this module while it parses flags, and `--help` stays fast.
"""

import gc
import os
import sys
import threading

import ml_collections

from elax import config as config_lib, exits
from elax.stopping import STARTED, RunStopped, TrainingDiverged


def main(config: ml_collections.ConfigDict, workdir: str) -> int:
    """Run `config` in `workdir`; returns the exit code (`elax.exits`)."""
    from elax import checkpoint, distributed, workdir as wd   # JAX: after the command line is parsed
    collect_garbage_less_often()
    try:
        run(config, workdir)
    except KeyboardInterrupt:
        return exits.error("interrupted. The same command resumes the run from its last checkpoint; finished levels "
                           "are kept.", exits.INTERRUPTED)
    except RunStopped as error:  # Ctrl-C or SIGTERM, taken at an epoch end
        return exits.error(f"interrupted: {error}", exits.INTERRUPTED)
    except TrainingDiverged as error:
        return exits.error(error, exits.DIVERGED)
    except wd.WorkdirBusy as error:
        return exits.error(error, exits.BUSY)
    except (ValueError, FileNotFoundError, checkpoint.DamagedCheckpoint) as error:  # the message says the fix
        if "No space left on device" in str(error):   # TensorStore's, raised mid-write: one line of it
            return exits.error(f"No space left on device while writing into {workdir}. Free space and run the same "
                               "command; finished levels are kept.", exits.BAD_INPUT)
        return exits.error(error, exits.BAD_INPUT)
    except checkpoint.DiskFull as error:  # elax's own check: it names the path and the fix
        return exits.error(f"{error.strerror}.", exits.BAD_INPUT)
    except OSError as error:  # read-only, disk full, a file where a folder should be: name the path
        where = f" ({error.filename})" if error.filename else ""
        return exits.error(f"{error.strerror or error}{where}. Check the path, its permissions and free space; "
                           "finished levels are kept.", exits.BAD_INPUT)
    except Exception as error:  # a collective that lost its peers; anything else keeps its traceback
        if not distributed.lost_a_peer(error):
            raise
        return exits.report_lost_peer(str(error).strip().splitlines()[0])
    return 0


def run(config: ml_collections.ConfigDict, workdir: str) -> None:
    expand_paths(config)
    split_name_lists(config)
    workdir = os.path.abspath(os.path.expanduser(workdir))  # sub-runs record the runs they build on by this path
    if "[" in workdir or "]" in workdir:  # Orbax reads them as a glob pattern: nothing saved there would restore
        raise ValueError(f"--workdir {workdir!r}: brackets in the path break checkpoint restores (Orbax takes "
                         "them for a pattern). Use a path without [ and ].")
    if config.train.deterministic is True:  # before the first JAX computation (the next line's, in several processes)
        use_deterministic_gpu_kernels()
    from elax import distributed, runs, workdir as wd
    distributed.check_same_run(config.to_dict(), workdir)
    mode = runs.mode_of(config)
    log = _print_above_progress_bars if wd.is_primary() else (lambda line: None)
    if mode.trains:
        wd.check_placement(workdir, config.mode)
        import jax
        enable_compilation_cache()
        hosts = f" in {jax.process_count()} processes (this is process {jax.process_index()})" if (
            jax.process_count() > 1) else ""
        print(f"elax {config.mode} run in {workdir} on {jax.device_count()} {jax.devices()[0].platform} "
              f"device(s){hosts}", flush=True)
    STARTED.set()
    records = mode.run(config, workdir, log=log)
    if mode.table and wd.is_primary():
        print_table(records)


_LOG_LOCK = threading.Lock()   # runs trained side by side log from their threads


def _print_above_progress_bars(line: str) -> None:
    """print(), but above the progress bars (concurrent runs show several) instead of through them, with config
    keys spelt as the command line's flags. Each line is written and flushed whole, so that lines of runs trained
    side by side, and stderr's lines in a log file, never glue to each other."""
    from elax.runs import outputs
    text = exits.as_flags(line)
    with _LOG_LOCK:
        if outputs.interactive():
            from tqdm.auto import tqdm
            tqdm.write(text, file=sys.stdout)
        else:   # no bars to draw around
            sys.stdout.write(text + "\n")
        sys.stdout.flush()


def collect_garbage_less_often() -> None:
    """Tune Python's cyclic garbage collector for tracing and compiling, which allocate many short-lived objects:
    what is alive now (the imported modules) is never scanned again, and passes come every 10,000 allocations
    instead of 700 (docs/performance.md, "The test suite's time"). Collects first, so that no garbage is kept."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)


def use_deterministic_gpu_kernels() -> None:
    """Ask XLA for deterministic GPU kernels (bit-identical resumes). Call before the first JAX computation: the
    GPU backend reads XLA_FLAGS when it starts. No effect on CPU, whose kernels are deterministic."""
    add_xla_flag("--xla_gpu_deterministic_ops", "true")


def add_xla_flag(name: str, value: str) -> None:
    """Add `name=value` to XLA_FLAGS unless it is set there already (XLA reads them once, as JAX starts)."""
    flags = os.environ.get("XLA_FLAGS", "")
    if name not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {name}={value}".strip()


def expand_paths(config: ml_collections.ConfigDict) -> None:
    """`~` in every path option (`elax.config` keys with path=True) means the home directory, as in a shell."""
    for name, key in config_lib.KEYS.items():
        if key.path:
            section, option = name.split(".")
            value = config[section][option]
            config[section][option] = (tuple(os.path.expanduser(v) for v in value) if isinstance(value, tuple)
                                       else os.path.expanduser(value))


def split_name_lists(config: ml_collections.ConfigDict) -> None:
    """Lists of names as a shell gives them: ml_collections keeps `--config.experiment.target_models=a,b` (or
    `(a, b)`, unquoted) as the one string 'a,b'; names never hold commas, brackets or quotes, so split it."""
    for name, key in config_lib.KEYS.items():
        if key.names:
            section, option = name.split(".")
            config[section][option] = tuple(_split_names(config[section][option]))


def _split_names(items):
    for item in items:
        if not isinstance(item, str):
            yield item  # for validation to refuse, naming it
            continue
        for part in item.strip("()[] ").split(","):
            name = part.strip(" '\"")
            if name:
                yield name


def listing() -> str:
    """What `python main.py --list` prints: every registry's names, and the config files beside main.py."""
    from elax import mask_updates, models, optim, runs, transfer
    from elax.data import catalog
    families = [f"  {f.name}: {f.pattern} (e.g. {', '.join(f.examples)})" for _, f in models.FAMILIES.items()]
    datasets = [f"{d.name}{' (streamed)' if d.streamed_only else ''}" for _, d in catalog.DATASETS.items()]
    strategies = ", ".join(f"{s} ({transfer.STRATEGIES.get(s).direction})" for s in transfer.strategies())
    configs = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
    files = sorted(f for f in os.listdir(configs) if f.endswith(".py")) if os.path.isdir(configs) else []
    return "\n".join([
        f"modes (config.mode): {', '.join(runs.MODES.names())}",
        "model families (config.model.name):", *families,
        f"datasets (config.data.name): {', '.join(datasets)}",
        f"baselines (config.baseline.method): {', '.join(runs.BASELINES.names())}",
        f"transfer strategies (config.transfer.strategy): {strategies}, or an official mapping string",
        f"optimizers (config.train.optimizer): {', '.join(optim.OPTIMIZERS.names())}",
        f"schedules (config.train.schedule): {', '.join(optim.SCHEDULES.names())}",
        f"mask updates (config.mask_update.method): {', '.join(mask_updates.MASK_UPDATES.names())}",
        *([f"config files (--config configs/FILE): {', '.join(files)}"] if files else []),
        "every key, its default and meaning: docs/configuration.md"])


def print_table(records) -> None:
    from elax import report
    print()
    print(report.to_markdown(report.summarize(records)))


def enable_compilation_cache() -> None:
    """Keep compiled programs across runs (resumes, sub-runs, replicates): ~/.cache/elax/jax unless
    $JAX_COMPILATION_CACHE_DIR names another place."""
    import jax
    if not jax.config.jax_compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", os.path.expanduser("~/.cache/elax/jax"))
