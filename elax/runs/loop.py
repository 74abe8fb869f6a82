"""The resumable level loop: train a ticket from its rewind step to the end of the schedule in a level directory,
and record the result. IMP levels, transferred tickets and baselines all go through `train_and_record`.

A killed run started again with the same command skips finished levels and resumes the level in progress from
its latest checkpoint; since data order and augmentation derive from (seed, step), it ends with the same results.

Each epoch's metrics line, TensorBoard scalars and progress: `elax.runs.outputs`.
"""

import contextlib
import dataclasses
import functools
import os
import time
from typing import Callable

import jax
import jax.numpy as jnp

from elax import checkpoint, distributed, masks, models, nm, train, workdir as wd
from elax.data import catalog
from elax.runs import outputs
from elax.runs.context import RunContext
from elax.stopping import STOP, TrainingDiverged, stopped
from elax.ticket import Ticket


# A ticket maker is called only when a level starts fresh (not when it resumes), since making one can be costly
# (pruning, scoring, transferring).
TicketMaker = Callable[[], Ticket]


def train_ticket(ctx: RunContext, workdir: str, level: int, make_ticket: TicketMaker, desc: str, *,
                 on_step: dict[int, Callable] | None = None, log=print,
                 method: str | None = None) -> tuple[train.TrainState, dict]:
    """Train the ticket of `level` from its rewind step to the end of the schedule, resuming if possible.

    on_step maps a global step to a callback(state) run when training reaches that step (level 0 saves its
    rewind state). `method` is what the metrics lines name (default: the config's, `report.metrics.method_of`).
    Returns the final state and its test metrics {'loss', 'accuracy'}.
    """
    if STOP.is_set():
        raise stopped(desc)
    wd.check_level(level)
    workdir = os.path.expanduser(workdir)
    ckpt_dir, metrics_path = wd.checkpoints_dir(workdir, level), wd.metrics_path(workdir, level)
    on_step = dict(on_step or {})
    if checkpoint.latest_step(ckpt_dir) is not None:
        state = checkpoint.restore_state(ckpt_dir, ctx.template_state, log=log)
        outputs.truncate_metrics(metrics_path, int(state.step))
        # A level resumes the ticket it started from: `make_ticket` is not called (say so, for a notebook's).
        log(f"{desc}: resuming at step {int(state.step)} of {ctx.total_steps} from {ckpt_dir} (the ticket this level "
            "started from; to train another ticket, pass another workdir)")
    else:
        outputs.forget_metrics(metrics_path)  # lines of a start whose checkpoints are gone
        state = _start_from_ticket(ctx, workdir, level, make_ticket)
        if int(state.step) in on_step:
            on_step[int(state.step)](state)
    files = outputs.level_files(ctx, workdir, level, desc, method, state.mask)
    state, tests = _fit(ctx, state, [files], desc, on_step, log=log)
    if tests is None:  # restored at the end of training: no epoch ran, so nothing was evaluated yet
        return state, ctx.trainer.evaluate(state.params, state.batch_stats, ctx.data)
    return state, tests[0]


def _start_from_ticket(ctx: RunContext, workdir: str, level: int, make_ticket: TicketMaker) -> train.TrainState:
    """The fresh state of a level's ticket (made now), the ticket saved in the level directory."""
    ticket = make_ticket()
    _check_ticket_fits(ctx, ticket)
    masks.validate(ticket.mask, ticket.params)
    state = ctx.fresh_state(ticket.params, ticket.batch_stats, ticket.mask, ticket.rewind_step)
    checkpoint.save_tree(wd.ticket_dir(workdir, level), {
        "params": state.params, "batch_stats": ticket.batch_stats, "mask": ticket.mask, "step": ticket.rewind_step})
    return state


def _check_ticket_fits(ctx: RunContext, ticket) -> None:
    """A ticket of another model must not train: Flax would ignore parameters the context's model lacks. Nor one
    that starts where the schedule ends: it would train nothing and be recorded as trained."""
    if models.variables_mismatch(ctx.model, ctx.data.image_shape, params=ticket.params):
        raise ValueError(f"The ticket is of {ticket.model_name}, but this run trains {ctx.model_name}: their "
                         "parameters differ. Transfer it first (elax.transfer.transfer_ticket(ticket, "
                         f"{ctx.model_name!r})), or set up the run for {ticket.model_name}.")
    if ticket.rewind_step >= ctx.total_steps:
        raise ValueError(f"The ticket starts at step {ticket.rewind_step} (its rewind step), but this run's schedule "
                         f"ends at step {ctx.total_steps} ({ctx.config.train.epochs} epochs of "
                         f"{ctx.trainer.steps_per_epoch} steps): it would train nothing. Set up the run with more "
                         "epochs (config.train.epochs), or give the ticket an earlier rewind step.")


def train_and_record(ctx: RunContext, workdir: str, level: int, make_ticket: TicketMaker, desc: str,
                     method: str, *, log=print, on_step=None, **extra) -> dict:
    """Train one level (resumably) and add its record to WORKDIR/results.json; the step every run repeats."""
    state, test = train_ticket(ctx, workdir, level, make_ticket, desc, on_step=on_step, log=log, method=method)
    return _record(ctx, workdir, state, test, level, method, log, **extra)


def _record(ctx: RunContext, workdir: str, state, test: dict, level: int, method: str, log, **extra) -> dict:
    """Add the record of a trained level to WORKDIR/results.json and say it."""
    record = make_record(ctx, state, test, level, method, **extra)
    wd.add_record(workdir, record)
    log(wd.summary_line(record))
    return record


@dataclasses.dataclass(frozen=True)
class Level:
    """One level to train and record: what `train_and_record` takes, for `train_levels`."""

    level: int
    make_ticket: TicketMaker
    desc: str
    method: str
    extra: dict = dataclasses.field(default_factory=dict)


def stack_size(ctx: RunContext) -> int:
    """`train.stack` (default 1: vmapped convolutions measured slower than separate runs, docs/performance.md).
    Streamed data and masks that change in training train one run at a time."""
    if catalog.is_streamed(ctx.config.data) or ctx.trainer.mask_update is not None:
        return 1
    return ctx.config.train.stack


def train_levels(ctx: RunContext, workdir: str, levels: list[Level], *, log=print) -> None:
    """Train and record independent levels that start at the rewind step (baseline, ETT levels), unfinished ones
    `stack_size` at a time in one program; a stack of one is `train_and_record`."""
    pending = [lv for lv in levels if not wd.finished(workdir, lv.level)]
    size = stack_size(ctx)
    if size < ctx.config.train.stack and len(pending) > 1:
        log(f"train.stack={ctx.config.train.stack} does not apply to streamed data or to masks that change in "
            "training: one level at a time")
    for start in range(0, len(pending), size):
        group = pending[start:start + size]
        if len(group) == 1:
            lv = group[0]
            train_and_record(ctx, workdir, lv.level, lv.make_ticket, lv.desc, lv.method, log=log, **lv.extra)
            continue
        states, tests = _train_stack(ctx, workdir, group, log)
        for lv, state, test in zip(group, states, tests):
            _record(ctx, workdir, state, test, lv.level, lv.method, log, **lv.extra)


def _train_stack(ctx: RunContext, workdir: str, group: list[Level], log):
    """Train the tickets of `group` side by side (a leading run axis). Each level keeps its own ticket,
    checkpoints and metrics; a killed stack resumes from the newest step that every member saved."""
    dirs = [wd.checkpoints_dir(workdir, lv.level) for lv in group]
    common = _common_step(dirs)
    if common is not None:
        for d in dirs:   # a member that saved past the others (killed between the members' saves)
            checkpoint.remove_after(d, common)
        states = [checkpoint.restore_state(d, ctx.template_state, step=common) for d in dirs]
        for lv in group:
            outputs.truncate_metrics(wd.metrics_path(workdir, lv.level), common)
    else:
        states = []
        for lv, d in zip(group, dirs):   # a stack that never saved together starts again from its tickets
            checkpoint.remove_after(d, -1)
            outputs.forget_metrics(wd.metrics_path(workdir, lv.level))
            states.append(_start_from_ticket(ctx, workdir, lv.level, lv.make_ticket))
    desc = f"{group[0].desc} .. {group[-1].desc} ({len(group)} stacked)"
    files = [outputs.level_files(ctx, workdir, lv.level, lv.desc, lv.method, s.mask) for lv, s in zip(group, states)]
    states, tests = _fit(ctx, train.stack(states), files, desc, log=log)
    states = train.unstack(states, len(group))
    if tests is None:  # restored at the end of training: no epoch ran, so nothing was evaluated yet
        tests = [ctx.trainer.evaluate(s.params, s.batch_stats, ctx.data) for s in states]
    return states, tests


def _common_step(dirs: list[str]) -> int | None:
    """The newest checkpoint step present in every directory (None if there is none)."""
    steps = [set(checkpoint.all_steps(d)) for d in dirs]
    shared = set.intersection(*steps) if steps else set()
    return max(shared) if shared else None


def make_record(ctx: RunContext, state: train.TrainState, test: dict, level: int, method: str, **extra) -> dict:
    """The results.json record of a finished level (deterministic: no timings, so resumed runs match)."""
    kept, total = masks.count(state.mask, ctx.prunable)
    return {"level": level, "method": method, "model": ctx.model_name, "dataset": ctx.config.data.name,
            "seed": ctx.config.seed, "recipe_id": wd.recipe_id(ctx.config.to_dict()),
            "sparsity": 1.0 - kept / total, "kept_weights": kept, "prunable_weights": total,
            "test_accuracy": test["accuracy"], "test_loss": test["loss"], "steps": int(state.step),
            "rewind_step": ctx.rewind_step, **_structure(ctx.config), **extra}


def _structure(config) -> dict:
    """The record's `structure` key: only for N:M runs, so unstructured records stay as they were."""
    structure = config.lottery.structure
    return {} if structure == nm.UNSTRUCTURED else {"structure": structure}


def chunk_end(step: int, steps_per_epoch: int, end: int, steps_per_call: int = 0, marks=()) -> int:
    """Where the training call starting at `step` stops: the end of its epoch (`Trainer.train_steps` never
    crosses one), `end`, the next of `marks` (steps with a callback), or after `steps_per_call` steps (0: no
    limit)."""
    stop = min((step // steps_per_epoch + 1) * steps_per_epoch, end, *[m for m in marks if m > step])
    return min(stop, step + steps_per_call) if steps_per_call else stop


def _fit(ctx: RunContext, state, files: list[outputs.Files], desc: str, on_step=None, log=print):
    """Train from `state` to the end of the schedule: one run, or a stack of len(files) runs (`state` with a
    leading run axis, trained in one program). Each epoch end appends every run's metrics (and TensorBoard
    scalars), shows its progress and, when due (every `checkpoint_every_secs`, at the end, on a stop), saves every
    run's checkpoint. Returns (state, test metrics of each run at the end, or None if no epoch ran)."""
    step = int(_members(state.step, len(files))[0])
    writers = outputs.event_writers(ctx, files, step)
    progress = outputs.progress_for(ctx, step, desc, log)
    try:
        return _train_epochs(ctx, state, files, desc, on_step or {}, progress, writers)
    finally:
        progress.close()
        for writer in filter(None, writers):
            writer.close()


def _members(tree, count: int) -> list:
    """The runs of a stack of `count` (a leading run axis), or [tree] for one run."""
    return train.unstack(tree, count) if count > 1 else [tree]


def _train_epochs(ctx: RunContext, state, files: list[outputs.Files], desc: str, on_step: dict,
                  progress: outputs.Progress, writers: list):
    """`_fit`'s loop, with its display and TensorBoard writers open."""
    trainer, cfg = ctx.trainer, ctx.config.train
    spe, end, stacked = trainer.steps_per_epoch, ctx.total_steps, len(files) > 1
    members = functools.partial(_members, count=len(files))
    step = int(members(state.step)[0])
    updates = set(trainer.mask_update.steps(step, end)) if trainer.mask_update else set()
    totals, epoch_start_time, tests, last_save = None, time.time(), None, time.time()
    while step < end:
        stop = chunk_end(step, spe, end, cfg.steps_per_call, (*on_step, *updates))
        if stacked:   # the levels of one run read that run's batches
            state, sums = trainer.train_steps_stacked(state, [ctx.config.seed] * len(files), ctx.data, stop - step)
        else:
            state, sums = trainer.train_steps(state, ctx.data, stop - step)
        _check_finite(state, sums, stop, desc, cfg.lr)
        totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
        progress.update(stop - step)
        step = stop
        if step in on_step:
            on_step[step](state)
        if step in updates:   # before the step's training and before any save at this step
            state = trainer.update_mask(state, ctx.data)
        if step % spe == 0 or step == end:
            seconds, runs = time.time() - epoch_start_time, members(state)
            entries = [_epoch_entry(ctx, run, run_totals, seconds) for run, run_totals in zip(runs, members(totals))]
            try:
                for run, entry in zip(runs, entries):
                    _evaluate_if_due(ctx, run, entry)
            except Exception:  # e.g. a damaged test image: the epoch trained well, keep it
                _keep_epoch(files, runs, entries, writers)
                raise
            outputs.append_epoch(files, entries, writers)
            progress.epoch(ctx, files, entries)
            if step == end:  # the last epoch is always evaluated: its numbers are the levels' results
                tests = [{"loss": e["test_loss"], "accuracy": e["test_accuracy"]} for e in entries]
            # Saves stall training, so they come at most every `checkpoint_every_secs` (and at the end): a kill
            # loses at most that much work, and the resumed run recomputes it identically.
            # Read once: no stop may fall between "no save due" and the raise. Every process saves or none does.
            stopping, save_due = distributed.any_process(
                STOP.is_set(), time.time() - last_save >= cfg.checkpoint_every_secs)
            if step == end or stopping or save_due:
                _save_runs(files, runs)
                last_save = time.time()
            totals, epoch_start_time = None, time.time()
            if stopping and step < end:
                raise stopped(desc, step)
    return state, tests


@jax.jit
def _all_finite(tree):
    """One device reduction (not one eager call per leaf) per chunk of steps."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]))


def _check_finite(state, sums, step: int, desc: str, lr: float) -> None:
    """Stop at once when the loss or a weight is NaN/inf: nothing of it is saved, the last checkpoint stays."""
    if not bool(_all_finite((sums["loss"], state.params))):
        raise TrainingDiverged(f"{desc} diverged by step {step}: the loss or weights are NaN or infinite. Lower "
                               f"config.train.lr (now {lr}) or add config.train.warmup_epochs; the last good "
                               "checkpoint is kept and the same command resumes from it.")


def _epoch_entry(ctx: RunContext, state, totals, seconds) -> dict:
    """The metrics line of the epoch that ends at `state.step`, before evaluation."""
    step = int(state.step)
    count = float(totals["count"])
    return {"epoch": -(-step // ctx.trainer.steps_per_epoch), "step": step,
            "lr": float(ctx.trainer.schedule(step - 1)),
            "train_loss": float(totals["loss"]) / count, "train_accuracy": float(totals["correct"]) / count,
            "time_s": round(seconds, 3), "images_per_s": round(count / max(seconds, 1e-9), 1)}


def _evaluate_if_due(ctx: RunContext, state, entry: dict) -> None:
    """Add the test metrics to `entry` every `eval_every_epochs` and at the end of training."""
    if entry["epoch"] % ctx.config.train.eval_every_epochs == 0 or entry["step"] == ctx.total_steps:
        test = ctx.trainer.evaluate(state.params, state.batch_stats, ctx.data)
        entry.update(test_loss=test["loss"], test_accuracy=test["accuracy"])


def _keep_epoch(files: list[outputs.Files], runs, entries: list[dict], writers: list) -> None:
    """After a failed evaluation, save the epoch's training (its metrics line without test numbers, and a
    checkpoint) so that the run resumes after it. Not in a multi-process run: saving needs every process, and
    the others may be stopped by then. A failing save leaves the caller's error to be reported."""
    if distributed.joined():
        return
    with contextlib.suppress(Exception):
        outputs.append_epoch(files, entries, writers)
        _save_runs(files, runs)


def _save_runs(files: list[outputs.Files], runs) -> None:
    for run_files, run in zip(files, runs):
        checkpoint.save_state(run_files.checkpoints, run)
