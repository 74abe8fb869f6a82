"""Tickets to publish, and using them: every level of an experiment's IMP and ETT runs of one seed, each one file
with the weights it trained to, and a table of them (`publish`); the test accuracy of a file's trained weights,
measured again (`evaluate`); the config that trains a ticket as its run did (`config_of`)."""

import glob
import os

from elax import workdir as wd
from elax.runs import sources
from elax.ticket import Ticket
from elax.tickets import files
from elax.tickets.from_runs import from_run

TABLE = "tickets.md"
TABLE_COLUMNS = ("file", "model", "method", "level", "sparsity %", "test accuracy %", "recipe id")


def publish(experiments, out: str, *, seed: int = 0, methods=("imp", "ett"), title: str | None = None,
            log=print) -> list[dict]:
    """Write the ticket of every finished level of the runs of `experiments` (a workdir, or several: one run, or an
    experiment with seed_N/ folders) whose method is in `methods` and whose seed is `seed`, with its trained
    weights, to OUT/<run>/level_NN.safetensors.gz (gzipped: pruned weights are zeros; <run>: its path in its
    workdir, e.g. seed_0/imp_cifar_resnet_20_8), and one table of them all, OUT/tickets.md (headed `title`). Each
    file's metadata names its run so. Several workdirs let transfer runs made beside an experiment (a run may not
    sit inside one) share its table. Returns the table's rows."""
    experiments = [experiments] if isinstance(experiments, str) else list(experiments)
    named = _named_runs(experiments, seed, methods)
    rows = []
    for name, run in named.items():
        records = wd.load_results(run)
        for record in records:
            level = record["level"]
            ticket, weights, _ = from_run(run, level, trained=True)
            path = os.path.join(out, name, f"level_{level:02d}.safetensors.gz")
            files.save(files.with_meta(ticket, run=name), path, trained_params=weights["params"],
                       trained_batch_stats=weights["batch_stats"], result=record)
            rows.append(_row(os.path.relpath(path, out), files.info(path)))
        log(f"{name}: {len(records)} tickets")
    names = " and ".join(os.path.basename(os.path.abspath(e)) for e in experiments)
    _write_table(out, rows, title or f"Tickets of seed {seed} of {names}")
    return rows


def _named_runs(experiments: list[str], seed: int, methods) -> dict[str, str]:
    """{name in the table: run directory} of the runs to publish, named by their path in their workdir."""
    named = {}
    for experiment in experiments:
        runs = _runs(experiment, seed, methods)
        if not runs:
            raise ValueError(f"{experiment} holds no finished {' or '.join(methods)} run of seed {seed}: give the "
                             "workdir of an experiment or run (its results.json records the levels), and a seed it "
                             "ran.")
        for run in runs:
            relative = os.path.relpath(run, experiment)   # its path there: two experiments may share folder names
            name = os.path.basename(os.path.abspath(run)) if relative == "." else relative.replace(os.sep, "/")
            if name in named:
                raise ValueError(f"two runs would be published as {name}: {named[name]} and {run}; publish them "
                                 "into different folders, or rename one run's folder.")
            named[name] = run
    return named


def _runs(experiment: str, seed: int, methods) -> list[str]:
    found = []
    for results in sorted(glob.glob(os.path.join(glob.escape(experiment), "**", wd.RESULTS_FILE), recursive=True)):
        run = os.path.dirname(results)
        config, records = wd.run_config(run), wd.load_results(run)
        if records and config.get("seed") == seed and records[0].get("method", config.get("mode")) in methods:
            found.append(run)
    return found


def _row(path: str, meta: dict) -> dict:
    method = meta.get("method", "")
    if method == "ett":
        method = f"ett from {meta.get('source_model')} ({meta.get('strategy')})"
    return {"file": path, "model": meta["model"], "method": method, "level": meta["level"],
            "sparsity %": f"{100 * meta['sparsity']:.2f}", "test accuracy %": f"{100 * meta['test_accuracy']:.2f}",
            "recipe id": meta.get("recipe_id", "")}


def _write_table(out: str, rows: list[dict], title: str) -> None:
    lines = [f"# {title}", "",
             "Each file is one ticket (mask, rewound weights, BatchNorm statistics if any) with the weights it "
             "trained to; `elax.tickets.load(FILE)` reads the ticket, `elax.tickets.load_trained(FILE)` the weights, "
             "`elax.tickets.evaluate(FILE)` measures their test accuracy again, `python -m elax.tickets info FILE` "
             "describes it (docs/tickets.md).", "",
             "| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "|".join("---" if c in ("file", "model", "method")
                                                                      else "---:" for c in TABLE_COLUMNS) + "|"]
    lines += ["| " + " | ".join(f"`{row[c]}`" if c == "file" else str(row[c]) for c in TABLE_COLUMNS) + " |"
              for row in rows]
    with open(os.path.join(out, TABLE), "w") as f:
        f.write("\n".join(lines) + "\n")


def evaluate(path: str, data_dir: str | None = None) -> dict:
    """{'accuracy', 'loss'} of the weights the ticket file `path` trained to, measured as its run measured them:
    by the Trainer of its recipe (`config_of`) on the test split of its data, BatchNorm in inference mode.
    data_dir: where its data is here (data.dir: a folder's place is not part of the recipe)."""
    from elax.runs import context
    variables = files.load_trained(path)
    meta = files.info(path)   # the header only: the tensors were read, and their digest checked, just above
    config = _config_of(meta, meta["model"])
    if data_dir is not None:
        config.data.dir = data_dir
    ctx = context.setup(config)
    return ctx.trainer.evaluate(variables["params"], variables.get("batch_stats", {}), ctx.data)


def config_of(ticket: Ticket):
    """A config that trains `ticket` (e.g. `tickets.load(path)`) as the run it came from did: the defaults, then
    the recipe, model, dataset and seed of its metadata; for `runs.setup` and `runs.train_ticket`."""
    return _config_of(ticket.meta or {}, ticket.model_name)


def _config_of(meta: dict, model_name: str):
    if "recipe" not in meta:
        raise ValueError(f"this ticket of {model_name} carries no recipe (it was not exported from a run): "
                         "build its config by hand (elax.config.default_config()).")
    values = {**meta["recipe"], "mode": "imp", "model.name": model_name, "seed": meta.get("seed", 0)}
    if "dataset" in meta:
        values["data.name"] = meta["dataset"]
    return sources.overlaid(values)
