"""Iterative Magnitude Pruning with weight rewinding: level 0 trains the dense network and saves its state at the
rewind step r; level L prunes the final weights of level L-1 and rewinds the survivors to step r."""

import functools
import math

import ml_collections

from elax import checkpoint, masks, models, nm, pruning, workdir as wd
from elax.runs.checks import check_training
from elax.runs.context import RunContext, open_run
from elax.runs.loop import chunk_end, train_and_record
from elax.runs.tickets import load_rewind
from elax.ticket import Ticket


def run_imp(config: ml_collections.ConfigDict, workdir: str, log=print) -> list[dict]:
    """IMP with rewinding: level 0 dense (rewind state saved at step r), then prune, rewind, retrain."""
    check_training(config)
    ctx = open_run(config, log)
    check_levels_keep_weights(ctx)
    _say_dense_layers(ctx, log)
    with ctx.claimed(workdir):
        for level in range(config.lottery.levels + 1):
            if not wd.finished(workdir, level):
                _train_level(ctx, workdir, level, log)
    records = wd.load_results(workdir)
    beyond = [level for level in wd.imp_levels(records) if level > config.lottery.levels]
    if beyond:
        log(f"lottery.levels={config.lottery.levels}: levels {beyond[0]}-{beyond[-1]}, finished before, are kept "
            "(results and reports include them; delete their level_* folders to drop them)")
    return records


def _train_level(ctx: RunContext, workdir: str, level: int, log) -> None:
    desc = f"imp {ctx.model_name} level {level}"   # names the run: an experiment's IMP runs train side by side
    if level == 0:
        save_rewind = functools.partial(_save_rewind, wd.rewind_dir(workdir))
        train_and_record(ctx, workdir, 0, functools.partial(dense_ticket, ctx), f"{desc} (dense)", wd.IMP,
                         log=log, on_step={ctx.rewind_step: save_rewind})
    else:
        train_and_record(ctx, workdir, level, functools.partial(imp_ticket, ctx, workdir, level, log=log), desc,
                         wd.IMP, log=log)


def _say_dense_layers(ctx: RunContext, log) -> None:
    """An N:M run leaves dense the kernels whose group axis M does not divide: say which."""
    structure = nm.parse(ctx.config.lottery.structure)
    if not structure:
        return
    params = models.variable_shapes(ctx.model, ctx.data.image_shape)["params"]
    kernels = masks.prunable_leaves(params, masks.prunable_kernels(ctx.family.prune_exclude + tuple(
        ctx.config.lottery.exclude)))
    dense = [name for name in kernels if name not in masks.prunable_leaves(params, ctx.prunable)]
    if dense:
        log(f"lottery.structure={ctx.config.lottery.structure}: {', '.join(dense)} left dense (their input axis "
            f"is not a multiple of {structure[1]})")


def check_levels_keep_weights(ctx: RunContext) -> None:
    """Refuse, before anything is written, a schedule whose last level would keep no weight (in a layer, with
    layer-wise pruning). An N:M schedule keeps N of every group of M at every level: it never empties a layer."""
    lot = ctx.config.lottery
    if nm.parse(lot.structure):
        return
    params = models.variable_shapes(ctx.model, ctx.data.image_shape)["params"]   # traced: no init compiled yet
    sizes = {name: math.prod(leaf.shape) for name, leaf in masks.prunable_leaves(params, ctx.prunable).items()}
    own = pruning.fraction_of(dict(lot.layer_fractions))
    pooled = {name: size for name, size in sizes.items() if own(name) is None}
    groups = {name: (size, own(name)) for name, size in sizes.items() if own(name) is not None}
    if lot.scope == "global" and pooled:
        groups["the network"] = (sum(pooled.values()), lot.prune_fraction)
    else:
        groups.update({name: (size, lot.prune_fraction) for name, size in pooled.items()})
    for name, (kept, fraction) in groups.items():
        for level in range(1, lot.levels + 1):
            kept -= math.ceil(fraction * kept)
            if kept < 1:
                raise ValueError(f"config.lottery.levels={lot.levels}: with prune_fraction {fraction}, "
                                 f"level {level} would leave no weight in {name}. Use fewer levels or a smaller "
                                 "prune_fraction.")


def _warn_empty_layers(ctx: RunContext, mask, level: int, log) -> None:
    """Global pruning may empty a layer: fatal on a plain path (the signal stops), survivable inside a residual
    block (the shortcut carries it), so it is said, not refused."""
    empty = [r.name for r in masks.layer_report(mask, ctx.prunable) if r.kept == 0]
    if empty:
        log(f"warning: level {level} prunes every weight of {', '.join(empty)} (global magnitude pruning emptied "
            f"{'it' if len(empty) == 1 else 'them'}); config.lottery.scope=layer keeps weights in every layer.")


def dense_ticket(ctx: RunContext) -> Ticket:
    """Level 0: the dense network at its initialisation (seeded by the run's seed), trained from step 0."""
    params, batch_stats = ctx.init_variables(ctx.config.seed)
    return Ticket(ctx.model, ctx.model_name, masks.build(params), params, batch_stats)


def _save_rewind(path: str, state) -> None:
    checkpoint.save_tree(path, {"params": state.params, "batch_stats": state.batch_stats, "step": int(state.step)})


def imp_ticket(ctx: RunContext, workdir: str, level: int, log=print) -> Ticket:
    """Prune level-1's final weights, then rewind the survivors: rewind params * mask, rewind BN, mask."""
    previous = checkpoint.restore_state(wd.checkpoints_dir(workdir, level - 1), ctx.template_state)
    if int(previous.step) != ctx.total_steps:
        raise RuntimeError(f"level {level - 1} in {workdir} has not finished training (step {int(previous.step)} "
                           f"of {ctx.total_steps}); delete {wd.level_dir(workdir, level - 1)} to retrain it.")
    mask = prune_level(ctx, previous.params, previous.mask, level)
    _warn_empty_layers(ctx, mask, level, log)
    rewind = _rewind_state(ctx, workdir, log)
    return Ticket(ctx.model, ctx.model_name, mask, masks.apply(rewind["params"], mask), rewind.get("batch_stats", {}),
                  level=level, rewind_step=ctx.rewind_step)


def prune_level(ctx: RunContext, params, mask, level: int):
    """The mask of `level` from the final `params` and `mask` of the level before: `lottery.prune_fraction` of the
    remaining weights by magnitude (globally or per layer, `layer_fractions` on their own), or, with an N:M
    `lottery.structure`, the weights per group of M of that level's `nm.schedule`."""
    lot = ctx.config.lottery
    structure = nm.parse(lot.structure)
    if structure:
        n, m = structure
        return nm.prune(pruning.magnitude_scores(params), mask, nm.schedule(n, m, lot.prune_fraction, level)[level],
                        m, ctx.prunable)
    return pruning.prune_magnitude(params, mask, lot.prune_fraction, ctx.prunable, lot.scope,
                                   dict(lot.layer_fractions))


def _rewind_state(ctx: RunContext, workdir: str, log) -> dict:
    """The rewind state; if it is damaged or gone, level 0 is replayed from its initialisation to the rewind
    step and it is saved again. Init, data order and augmentation derive from the seed, so the replay gives the
    state level 0 had."""
    try:
        return load_rewind(workdir)
    except (checkpoint.DamagedCheckpoint, FileNotFoundError) as error:
        log(f"{error} Rebuilding it: replaying level 0 to step {ctx.rewind_step}.")
    ticket = dense_ticket(ctx)
    state = ctx.fresh_state(ticket.params, ticket.batch_stats, ticket.mask, 0)
    step = 0
    while step < ctx.rewind_step:
        stop = chunk_end(step, ctx.trainer.steps_per_epoch, ctx.rewind_step)
        state, _ = ctx.trainer.train_steps(state, ctx.data, stop - step)
        step = stop
    _save_rewind(wd.rewind_dir(workdir), state)
    return load_rewind(workdir)
