"""What `main.py` runs: the runner of the config's mode (`elax.runs.RUNNERS`), resumable in its workdir."""

import os

import jax
import ml_collections

from elax import config as config_lib


def run(config: ml_collections.ConfigDict, workdir: str) -> None:
    config_lib.validate(config)
    enable_compilation_cache()
    print(f"elax {config.mode} run in {os.path.abspath(workdir)} on {jax.device_count()} "
          f"{jax.devices()[0].platform} device(s)", flush=True)
    if config.mode == "report":
        from elax import report
        out = config.report.out or os.path.join(workdir, "report")
        print(report.write_report(list(config.report.runs) or [workdir], out))
        return
    from elax.runs import RUNNERS
    records = RUNNERS[config.mode](config, workdir, log=lambda line: print(line, flush=True))
    if config.mode != "experiment":
        print_table(records)


def print_table(records) -> None:
    from elax import report
    print()
    print(report.to_markdown(report.summarize(records)))


def enable_compilation_cache() -> None:
    """Keep compiled programs across runs (resumes, sub-runs, replicates): ~/.cache/elax/jax unless
    $JAX_COMPILATION_CACHE_DIR names another place."""
    if not jax.config.jax_compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", os.path.expanduser("~/.cache/elax/jax"))
