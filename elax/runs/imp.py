"""Iterative Magnitude Pruning with weight rewinding: level 0 trains the dense network and saves its state at the
rewind step r; level L prunes the final weights of level L-1 and rewinds the survivors to step r."""

import functools

import ml_collections

from elax import checkpoint, masks, pruning, workdir as wd
from elax.runs.context import RunContext, setup
from elax.runs.loop import train_and_record
from elax.ticket import Ticket


def run_imp(config: ml_collections.ConfigDict, workdir: str, log=print) -> list[dict]:
    """IMP with rewinding: level 0 dense (rewind state saved at step r), then prune, rewind, retrain."""
    ctx = setup(config)  # validates the config first
    wd.claim(workdir, config.to_dict())
    for level in range(config.lottery.levels + 1):
        if wd.find_record(workdir, level):
            continue
        if level == 0:
            save_rewind = functools.partial(_save_rewind, wd.rewind_dir(workdir))
            train_and_record(ctx, workdir, 0, functools.partial(dense_ticket, ctx), "level 0 (dense)", wd.IMP,
                             log=log, on_step={ctx.rewind_step: save_rewind})
        else:
            train_and_record(ctx, workdir, level, functools.partial(imp_ticket, ctx, workdir, level),
                             f"level {level}", wd.IMP, log=log)
    return wd.load_results(workdir)


def dense_ticket(ctx: RunContext) -> Ticket:
    """Level 0: the dense network at its initialisation (seeded by the run's seed), trained from step 0."""
    v = ctx.init_variables(ctx.config.seed)
    return Ticket(ctx.model, ctx.model_name, masks.build(v["params"]), v["params"], v["batch_stats"])


def _save_rewind(path: str, state) -> None:
    checkpoint.save_tree(path, {"params": state.params, "batch_stats": state.batch_stats, "step": int(state.step)})


def imp_ticket(ctx: RunContext, workdir: str, level: int) -> Ticket:
    """Prune level-1's final weights, then rewind the survivors: rewind params * mask, rewind BN, mask."""
    previous = checkpoint.restore_state(wd.checkpoints_dir(workdir, level - 1), ctx.template_state)
    if int(previous.step) != ctx.total_steps:
        raise RuntimeError(f"level {level - 1} in {workdir} has not finished training (step {int(previous.step)} "
                           f"of {ctx.total_steps}); delete its results record to retrain it.")
    lot = ctx.config.lottery
    mask = pruning.prune_magnitude(previous.params, previous.mask, lot.prune_fraction, ctx.prunable, lot.scope)
    rewind = checkpoint.load_tree(wd.rewind_dir(workdir))
    return Ticket(ctx.model, ctx.model_name, mask, masks.apply(rewind["params"], mask), rewind["batch_stats"],
                  level=level, rewind_step=ctx.rewind_step)
