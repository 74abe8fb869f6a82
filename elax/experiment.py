"""The E-LTH experiment in one command: IMP on a source and on each target, elastic transfer source -> target,
baselines on each target at the same sparsities, then the comparison report. Every part is a resumable run in
its own sub-directory of the workdir:

    WORKDIR/imp_<source>/  imp_<target>/  ett_<source>_to_<target>/  <baseline>_<target>/  report/
"""

import os

import ml_collections

from elax import baselines, lottery, report


def _sub(config, mode: str, model: str, **sections) -> ml_collections.ConfigDict:
    c = config.copy_and_resolve_references()
    c.mode, c.model.name = mode, model
    for section, values in sections.items():
        for key, value in values.items():
            c[section][key] = value
    return c


def run_experiment(config: ml_collections.ConfigDict, workdir: str, log=print) -> list[dict]:
    e = config.experiment
    source_dir = os.path.join(workdir, f"imp_{e.source_model}")
    run_dirs = [source_dir]
    log(f"== IMP on the source {e.source_model}")
    lottery.run_imp(_sub(config, "imp", e.source_model), source_dir, log)
    for target in e.target_models:
        target_dir = os.path.join(workdir, f"imp_{target}")
        log(f"== IMP on the target {target} (the reference E-LTH tickets are compared with)")
        lottery.run_imp(_sub(config, "imp", target), target_dir, log)
        ett_dir = os.path.join(workdir, f"ett_{e.source_model}_to_{target}")
        log(f"== Elastic transfer {e.source_model} -> {target}")
        lottery.run_transfer(_sub(config, "transfer", target, transfer={"source": source_dir}), ett_dir, log)
        run_dirs += [target_dir, ett_dir]
        for method in e.baselines:
            baseline_dir = os.path.join(workdir, f"{method}_{target}")
            log(f"== Baseline {method} on {target}")
            baselines.run_baseline(
                _sub(config, "baseline", target, baseline={"method": method, "reference": target_dir}),
                baseline_dir, log)
            run_dirs.append(baseline_dir)
    out = os.path.join(workdir, "report")
    log("")
    log(report.write_report(run_dirs, out, title=f"E-LTH on {config.data.name}"))
    log(f"Report, CSV and plot in {out}")
    return report.load_records(run_dirs)
