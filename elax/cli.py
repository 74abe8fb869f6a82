"""What `main.py` runs: the runner of the config's mode (`elax.runs.RUNNERS`), resumable in its workdir, with
every failure a researcher can fix reported as one line and an exit code (2: bad input, 3: training diverged,
4: workdir busy, 5: another process of a multi-process run stopped, 130: Ctrl-C or SIGTERM)."""

import os
import sys
import threading

import ml_collections

from elax import config as config_lib

PATH_KEYS = ("data.dir", "transfer.source", "baseline.reference", "report.out")
NAME_LIST_KEYS = ("experiment.target_models", "experiment.baselines")
PEER_LOST = 5  # the exit code of a process whose multi-process run lost another process
INTERRUPTED = 130  # Ctrl-C or SIGTERM, as shells report a process ended by SIGINT


def main(config: ml_collections.ConfigDict, workdir: str) -> int:
    """Run `config` in `workdir`; returns the exit code (0 done, 2 bad input or files, 3 diverged, 4 busy,
    5 lost a peer process, 130 interrupted)."""
    from elax import checkpoint, distributed, workdir as wd
    from elax.runs.loop import RunStopped, TrainingDiverged
    try:
        run(config, workdir)
    except KeyboardInterrupt:
        return _error("interrupted. The same command resumes the run from its last checkpoint; finished levels "
                      "are kept.", INTERRUPTED)
    except RunStopped as error:  # Ctrl-C or SIGTERM, taken at an epoch end
        return _error(f"interrupted: {error}", INTERRUPTED)
    except TrainingDiverged as error:
        return _error(error, 3)
    except wd.WorkdirBusy as error:
        return _error(error, 4)
    except (ValueError, FileNotFoundError, checkpoint.DamagedCheckpoint) as error:  # the message says the fix
        if "No space left on device" in str(error):   # TensorStore's, raised mid-write: one line of it
            return _error(f"No space left on device while writing into {workdir}. Free space and run the same "
                          "command; finished levels are kept.", 2)
        return _error(error, 2)
    except checkpoint.DiskFull as error:  # elax's own check: it names the path and the fix
        return _error(f"{error.strerror}.", 2)
    except OSError as error:  # read-only, disk full, a file where a folder should be: name the path
        where = f" ({error.filename})" if error.filename else ""
        return _error(f"{error.strerror or error}{where}. Check the path, its permissions and free space; "
                      "finished levels are kept.", 2)
    except Exception as error:  # a collective that lost its peers; anything else keeps its traceback
        if not distributed.lost_a_peer(error):
            raise
        return report_lost_peer(str(error).strip().splitlines()[0])
    return 0


def report_lost_peer(why: str) -> int:
    """The one line of a process whose multi-process run lost another process (`why`: how it learnt of it);
    returns PEER_LOST. Printed once: a collective's error and the watchdog's thread may both learn of it."""
    if _lost_peer_reported.acquire(blocking=False):   # never released
        _error(f"another process of this run stopped ({why}), and this one cannot go on alone. Finished levels and "
               "the last checkpoint are kept: start every process again with the same command to resume.", PEER_LOST)
    return PEER_LOST


_lost_peer_reported = threading.Lock()


def _error(message, code: int) -> int:
    print(f"elax: error: {message}", file=sys.stderr)
    return code


def run(config: ml_collections.ConfigDict, workdir: str) -> None:
    expand_paths(config)
    split_name_lists(config)
    workdir = os.path.abspath(os.path.expanduser(workdir))  # sub-runs record the runs they build on by this path
    if "[" in workdir or "]" in workdir:  # Orbax reads them as a glob pattern: nothing saved there would restore
        raise ValueError(f"--workdir {workdir!r}: brackets in the path break checkpoint restores (Orbax takes "
                         "them for a pattern). Use a path without [ and ].")
    if config.train.deterministic is True:  # before the first JAX computation (the next line's, in several processes)
        use_deterministic_gpu_kernels()
    from elax import distributed, workdir as wd
    distributed.check_same_run(config.to_dict(), workdir)
    config_lib.validate(config)
    if config.mode == "report":
        from elax import report
        runs, out = list(config.report.runs) or [workdir], config.report.out or os.path.join(workdir, "report")
        print(f"elax report of {', '.join(runs)} into {os.path.abspath(out)}", flush=True)
        print(report.write_report(runs, out))
        return
    wd.check_placement(workdir, config.mode)
    import jax
    enable_compilation_cache()
    hosts = f" in {jax.process_count()} processes (this is process {jax.process_index()})" if (
        jax.process_count() > 1) else ""
    print(f"elax {config.mode} run in {workdir} on {jax.device_count()} "
          f"{jax.devices()[0].platform} device(s){hosts}", flush=True)
    from elax.runs import RUNNERS
    log = _print_above_progress_bars if wd.is_primary() else (lambda line: None)
    records = RUNNERS[config.mode](config, workdir, log=log)
    if config.mode != "experiment" and wd.is_primary():
        print_table(records)


def _print_above_progress_bars(line: str) -> None:
    """print(), but above the progress bars (concurrent runs show several) instead of through them."""
    from tqdm.auto import tqdm
    tqdm.write(line, file=sys.stdout)
    sys.stdout.flush()


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
    """`~` in every path option means the home directory, as in a shell."""
    for key in PATH_KEYS:
        section, name = key.split(".")
        config[section][name] = os.path.expanduser(config[section][name])
    config.report.runs = tuple(os.path.expanduser(r) for r in config.report.runs)


def split_name_lists(config: ml_collections.ConfigDict) -> None:
    """Lists of names as a shell gives them: ml_collections keeps `--config.experiment.target_models=a,b` (or
    `(a, b)`, unquoted) as the one string 'a,b'; names never hold commas, brackets or quotes, so split it."""
    for key in NAME_LIST_KEYS:
        section, name = key.split(".")
        config[section][name] = tuple(_split_names(config[section][name]))


def _split_names(items):
    for item in items:
        if not isinstance(item, str):
            yield item  # for validation to refuse, naming it
            continue
        for part in item.strip("()[] ").split(","):
            name = part.strip(" '\"")
            if name:
                yield name


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
