"""The E-LTH experiment in one command: IMP on a source and on each target, elastic transfer source -> target,
baselines on each target at the same sparsities, then the comparison report. Every part is a resumable run in
its own sub-directory of the workdir:

    WORKDIR/imp_<source>/  imp_<target>/  ett_<source>_to_<target>/  <baseline>_<target>/  report/

With several seeds (`experiment.seeds`), each seed's runs are in WORKDIR/seed_<s>/ and the report (mean ± std
over seeds, error bars, claims) covers them all.
"""

import os

import ml_collections

from elax import report, workdir as wd
from elax.runs.baselines import run_baseline
from elax.runs.ett import run_transfer
from elax.runs.imp import run_imp


def _sub(config, mode: str, model: str, seed: int | None = None, **sections) -> ml_collections.ConfigDict:
    c = config.copy_and_resolve_references()
    c.mode, c.model.name = mode, model
    c.seed = c.seed if seed is None else seed
    for section, values in sections.items():
        for key, value in values.items():
            c[section][key] = value
    return c


def run_experiment(config: ml_collections.ConfigDict, workdir: str, log=print) -> list[dict]:
    """Every run of the experiment for each seed of `experiment.seeds` (WORKDIR/seed_<s>/..., or WORKDIR itself
    for the one `seed` when empty), then one report over all of them (mean ± std over seeds, claims)."""
    with wd.lock(workdir):
        return _run_seeds(config, workdir, log)


def _run_seeds(config: ml_collections.ConfigDict, workdir: str, log) -> list[dict]:
    seeds = tuple(config.experiment.seeds)
    run_dirs = []
    for seed in seeds or (config.seed,):
        seed_dir = os.path.join(workdir, f"seed_{seed}") if seeds else workdir
        if seeds:
            log(f"==== seed {seed} ({seeds.index(seed) + 1} of {len(seeds)})")
        run_dirs += _run_one_seed(_sub(config, "experiment", config.model.name, seed=seed), seed_dir, log)
    out = os.path.join(workdir, "report")
    log("")
    log(report.write_report(run_dirs, out, title=f"E-LTH on {config.data.name}"))
    log(f"Report, CSV and plot in {out}")
    return report.load_records(run_dirs)


def _run_one_seed(config: ml_collections.ConfigDict, workdir: str, log) -> list[str]:
    """IMP on the source and the targets, ETT source -> each target, the baselines; returns the run dirs."""
    e = config.experiment
    source_dir = os.path.join(workdir, f"imp_{e.source_model}")
    run_dirs = [source_dir]
    log(f"== IMP on the source {e.source_model}")
    run_imp(_sub(config, "imp", e.source_model), source_dir, log)
    for target in e.target_models:
        target_dir = os.path.join(workdir, f"imp_{target}")
        log(f"== IMP on the target {target} (the reference E-LTH tickets are compared with)")
        run_imp(_sub(config, "imp", target), target_dir, log)
        ett_dir = os.path.join(workdir, f"ett_{e.source_model}_to_{target}")
        log(f"== Elastic transfer {e.source_model} -> {target}")
        run_transfer(_sub(config, "transfer", target, transfer={"source": source_dir}), ett_dir, log)
        run_dirs += [target_dir, ett_dir]
        for method in e.baselines:
            baseline_dir = os.path.join(workdir, f"{method}_{target}")
            log(f"== Baseline {method} on {target}")
            run_baseline(
                _sub(config, "baseline", target, baseline={"method": method, "reference": target_dir}),
                baseline_dir, log)
            run_dirs.append(baseline_dir)
    return run_dirs
