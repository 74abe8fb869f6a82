"""Elastic ticket transformation runs: every selected level's ticket of a source IMP run, moved to this run's
model (`elax.transfer`) and trained like an IMP level of the source (same recipe, from its rewind step)."""

import functools
import os

import ml_collections

from elax import nm, transfer, workdir as wd
from elax.config import fail
from elax.runs.checks import check_plan, check_training, check_transfer_options
from elax.runs.context import RunContext, open_run
from elax.runs.loop import Level, train_levels
from elax.runs.sources import check_same_classes, imp_record, inherit_recipe, select_levels, source_run
from elax.runs.tickets import load_ticket
from elax.ticket import Ticket


def run_transfer(config: ml_collections.ConfigDict, workdir: str, log=print) -> list[dict]:
    """Train the elastic transfer of each selected level's ticket of an IMP source run, like an IMP level."""
    check_transfer(config)
    t = config.transfer
    source_config, source_records = source_run(t.source, "transfer.source")
    config = inherit_recipe(config, source_config, "source run", log)
    config = _with_source_structure(config, source_config, log)
    levels = select_levels(t.levels, source_config, source_records, f"transfer.source {t.source}",
                           "transfer.levels", log=log)
    ctx = open_run(config, log)
    pending = [level for level in levels if not wd.finished(workdir, level)]
    if pending:  # a finished run needs nothing of its source (whose rewind state may be gone by now)
        check_same_classes(load_ticket(t.source, pending[0]), ctx, f"transfer.source {t.source}")
    source_model = source_config["model"]["name"]
    plan = transfer.plan(source_model, ctx.model, t.strategy)
    for line in f"Plan: {plan}\n  mapping string: {plan.to_string()}".splitlines():
        log(line)
    with ctx.claimed(workdir):
        train_levels(ctx, workdir, [
            Level(level, functools.partial(ett_ticket, ctx, level), f"ett {source_model}->{ctx.model_name} level "
                  f"{level}", wd.ETT, {"source_model": source_model, "source_level": level,
                                       "source_sparsity": imp_record(source_records, level)["sparsity"],
                                       "strategy": strategy_label(t)})
            for level in levels], log=log)
    return wd.load_results(workdir)


def _with_source_structure(config: ml_collections.ConfigDict, source_config: dict, log):
    """The source's `lottery.structure`: an N:M ticket stays N:M, and its sparsity counts the same layers."""
    structure = source_config.get("lottery", {}).get("structure", nm.UNSTRUCTURED)
    if config.lottery.structure == structure:
        return config
    config = config.copy_and_resolve_references()
    config.lottery.structure = structure
    log(f"Structure of the source run: lottery.structure={structure!r}")
    return config


def check_transfer(c: ml_collections.ConfigDict) -> None:
    """A transfer run's config: what every training run needs, its options, and a plan from the source run's
    model (when the source exists; a missing one is named when it is read)."""
    check_training(c)
    t = c.transfer
    if not t.source:
        fail("transfer.source", "is empty.", "Set config.transfer.source to the workdir of an IMP run.")
    check_transfer_options(t)
    source = wd.read_json(os.path.join(os.path.expanduser(t.source), wd.CONFIG_FILE))
    if source is None:
        return
    source_model = source["model"]["name"]
    if c.model.name == source_model:
        fail("model.name", f"is the source run's model ({source_model}): a transfer moves its tickets to another "
             "depth.", "Pick a deeper or shallower model of its family.")
    check_plan(source_model, c.model.name, t.strategy, models_key="model.name", replica_masks=t.replica_masks)


def ett_ticket(ctx: RunContext, level: int) -> Ticket:
    """The source run's ticket of `level`, transferred to this run's model with the config's options."""
    t = ctx.config.transfer
    return transfer.transfer_ticket(load_ticket(t.source, level), ctx.model, strategy=t.strategy,
                                    replica_masks=t.replica_masks, weights=t.weights, seed=ctx.config.seed,
                                    prunable=ctx.prunable)


def strategy_label(t: ml_collections.ConfigDict) -> str:
    """The strategy and its control variants, as the report names the series ('append/reinit')."""
    return t.strategy + ("/permuted-replica-masks" if t.replica_masks == "permute" else "") + (
        "/reinit" if t.weights == "reinit" else "")
