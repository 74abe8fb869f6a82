"""The E-LTH experiment in one command: IMP on a source and on each target, elastic transfer source -> target,
baselines on each target at the same sparsities, then the comparison report. Every part is a resumable run in
its own sub-directory of the workdir:

    WORKDIR/imp_<source>/  imp_<target>/  ett_<source>_to_<target>[_<setting>]/  <baseline>_<target>/  report/

With several seeds (`experiment.seeds`), each seed's runs are in WORKDIR/seed_<s>/ and the report (mean ± std
over seeds, error bars, claims) covers them all. Runs whose inputs are ready train side by side
(`experiment.concurrent_runs`, `elax.runs.jobs`): ETT once the source's IMP run is done, the baselines once
their target's.
"""

import hashlib
import os

import ml_collections

from elax import config as config_lib, distributed, nm, report, workdir as wd
from elax.config import fail
from elax.data import catalog
from elax.runs import jobs
from elax.runs.baselines import BASELINES, record_extras, run_baseline
from elax.runs.checks import (check_baseline_settings, check_model_name, check_plan, check_training,
                              check_transfer_options)
from elax.runs.ett import run_transfer, strategy_label
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
    for the one `seed` when empty), `experiment.concurrent_runs` at a time, then one report over all of them
    (mean ± std over seeds, claims)."""
    check_experiment(config)
    # Decided (and maybe refused) before the workdir exists.
    workers = jobs.concurrent_runs(config.experiment.concurrent_runs, streamed=catalog.is_streamed(config.data))
    with wd.held(workdir, trained=wd.files_below):
        seeds = tuple(config.experiment.seeds)
        if seeds:  # before the jobs are named: their names depend on the runs present
            _adopt_single_seed_runs(workdir, seeds, wd.recipe_id(config.to_dict()), log)
        else:
            _refuse_seedless_run_over_seed_folders(workdir, config.seed)
        all_jobs = [job for seed in seeds or (config.seed,) for job in _seed_jobs(
            _sub(config, "experiment", config.model.name, seed=seed), workdir, f"seed_{seed}" if seeds else "")]
        if workers > 1:
            log(f"{len(all_jobs)} runs, up to {workers} at once (experiment.concurrent_runs)")
        jobs.run_jobs(all_jobs, workers, log)
        run_dirs = [os.path.join(workdir, job.name) for job in all_jobs]
        out = os.path.join(workdir, "report")
        log("")
        log(report.write_report(run_dirs, out, title=f"E-LTH on {config.data.name}"))
        log(f"Report, CSV and plot in {out}")
        return report.load_records(run_dirs)


def check_experiment(c: ml_collections.ConfigDict) -> None:
    """An experiment's config: what its runs need, its models (a plan from the source to every target), its
    baselines and seeds."""
    check_training(c)
    e = c.experiment
    check_model_name("experiment.source_model", e.source_model)
    check_transfer_options(c.transfer)
    targets = tuple(e.target_models)
    if not targets or len(set(targets)) != len(targets) or e.source_model in targets:
        fail("experiment.target_models", f"must be one or more distinct models other than the source "
             f"{e.source_model!r}, got {targets}.", "E.g. config.experiment.target_models=cifar_resnet_32,"
             "cifar_resnet_56; for IMP on one model alone use config.mode=imp.")
    # One strategy serves every target; deeper and shallower targets (the paper's ImageNet 26 -> 18, 34) need two.
    split = ("One experiment stretches or squeezes: run the deeper and the shallower targets as two experiments "
             "with the same workdir (the second reuses the source's finished IMP runs)." if len(targets) > 1 else "")
    for target in targets:
        check_model_name("experiment.target_models", target)
        check_plan(e.source_model, target, c.transfer.strategy, split, models_key="experiment.target_models",
                   replica_masks=c.transfer.replica_masks)
    for method in e.baselines:
        if method not in BASELINES:
            fail("experiment.baselines", BASELINES.unknown(method))
    if e.baselines and c.lottery.structure != nm.UNSTRUCTURED:
        fail("experiment.baselines", f"prune without a structure, and this experiment's tickets are "
             f"{c.lottery.structure}: their records would say {c.lottery.structure} of unstructured masks.",
             "Leave them out here (config.experiment.baselines='()') and run them in an unstructured experiment "
             "of the same recipe, whose report can hold both.")
    check_baseline_settings(c.baseline)
    config_lib.check_experiment_values(c)


def _refuse_seedless_run_over_seed_folders(workdir: str, seed: int) -> None:
    """Without `experiment.seeds` the runs would be trained again at the top of a workdir whose runs live in
    seed_<s>/ folders, and its report would cover one seed."""
    present = sorted(int(name[5:]) for name in os.listdir(workdir) if name.startswith("seed_")
                     and name[5:].isdigit() and wd.runs_inside(os.path.join(workdir, name)))
    if present:
        listed = ",".join(map(str, present))
        raise ValueError(f"{workdir} holds the runs of seeds {listed} (seed_<s>/), and this command gives no "
                         f"experiment.seeds: it would train seed {seed}'s runs again outside them. Pass "
                         f"config.experiment.seeds='({listed})' to resume or report them (add seeds to extend).")


def _adopt_single_seed_runs(workdir: str, seeds: tuple, recipe_id: str, log) -> None:
    """Runs made before `experiment.seeds` was given (WORKDIR/<run>, all of one seed and of this `recipe_id`)
    move to WORKDIR/seed_<s>/ when s is one of `seeds` and that folder holds no runs yet, so that adding seeds
    does not train that seed again. They move together, so each finds the runs it builds on where it found them
    (`workdir.claim`)."""
    single = [run for run in wd.runs_inside(workdir) if os.sep not in run]
    if not single:
        return
    configs = [wd.read_json(os.path.join(workdir, run, wd.CONFIG_FILE)) for run in single]
    seed = configs[0].get("seed")
    destination = os.path.join(workdir, f"seed_{seed}")
    if not (seed in seeds and all(c.get("seed") == seed and "workdir" in c and c.get("recipe_id") == recipe_id
                                  for c in configs)
            and not wd.runs_inside(destination)):
        log(f"Not used: {', '.join(single)} (runs made without experiment.seeds). With seeds, each seed's runs "
            f"live in seed_<s>/; `python -m elax.report {workdir}/seed_*` reports them without those.")
        return
    distributed.barrier("single-seed runs read")  # every process has decided before any run moves
    if wd.is_primary():
        os.makedirs(destination, exist_ok=True)
        for run in single:
            os.rename(os.path.join(workdir, run), os.path.join(destination, run))
    distributed.barrier("single-seed runs moved")
    log(f"Moved {', '.join(single)} (runs made without experiment.seeds, seed {seed}) into {destination}: "
        "they are that seed's runs.")


def ett_run_name(folder: str, source: str, target: str, transfer) -> str:
    """ett_<source>_to_<target> for the first transfer setting run in `folder`; another setting (strategy,
    `weights=reinit`, `replica_masks=permute`) gets ett_<source>_to_<target>_<setting>, so that settings are
    compared in one workdir, on its IMP runs."""
    plain = f"ett_{source}_to_{target}"
    existing = wd.read_json(os.path.join(folder, plain, wd.CONFIG_FILE))
    label = strategy_label(transfer)
    if existing is None or strategy_label(ml_collections.ConfigDict(existing["transfer"])) == label:
        return plain
    strategy = transfer.strategy.strip()
    if ":" in strategy:  # an official mapping string: not a file name
        label = "mapping-" + hashlib.sha1(strategy.encode()).hexdigest()[:8] + label[len(transfer.strategy):]
    return f"{plain}_{label.replace('/', '-')}"


def baseline_run_name(method: str, baseline, target: str) -> str:
    """<method>_<target>, or <method>-<distribution>_<target> for a layer distribution other than the method's
    default (its records name it too), so that both kinds fit in one workdir."""
    distribution = record_extras(BASELINES.get(method), baseline).get("distribution")
    return f"{method}-{distribution}_{target}" if distribution else f"{method}_{target}"


def _seed_jobs(config: ml_collections.ConfigDict, workdir: str, prefix: str) -> list[jobs.Job]:
    """The runs of one seed in WORKDIR/`prefix`: IMP on the source and the targets, ETT source -> each target,
    the baselines on each target."""
    e = config.experiment
    title = (lambda text: f"seed {config.seed}: {text}") if prefix else (lambda text: text)

    def job(run_fn, mode, model, name, text, after=(), **sections):
        name = os.path.join(prefix, name)
        sub = _sub(config, mode, model, **sections)
        return jobs.Job(name, title(text), lambda log: run_fn(sub, os.path.join(workdir, name), log),
                        tuple(os.path.join(prefix, a) for a in after))

    source = f"imp_{e.source_model}"
    out = [job(run_imp, "imp", e.source_model, source, f"IMP on the source {e.source_model}")]
    for target in e.target_models:
        reference = f"imp_{target}"
        out.append(job(run_imp, "imp", target, reference,
                       f"IMP on the target {target} (the reference E-LTH tickets are compared with)"))
        out.append(job(run_transfer, "transfer", target,
                       ett_run_name(os.path.join(workdir, prefix), e.source_model, target, config.transfer),
                       f"Elastic transfer {e.source_model} -> {target}", after=(source,),
                       transfer={"source": os.path.join(workdir, prefix, source)}))
        for method in e.baselines:
            out.append(job(run_baseline, "baseline", target, baseline_run_name(method, config.baseline, target),
                           f"Baseline {method} on {target}",
                           after=(reference,), baseline={"method": method,
                                                         "reference": os.path.join(workdir, prefix, reference)}))
    return out
