"""The resumable level loop: train a ticket from its rewind step to the end of the schedule in a level directory,
and record the result. IMP levels, transferred tickets and baselines all go through `train_and_record`.

A killed run started again with the same command skips finished levels and resumes the level in progress from
its latest checkpoint; since data order and augmentation derive from (seed, step), it ends with the same results.
"""

import json
import os
import sys
import time
from typing import Callable

import jax
import jax.numpy as jnp

from elax import checkpoint, masks, train, workdir as wd
from elax.runs.context import RunContext
from elax.ticket import Ticket


class TrainingDiverged(RuntimeError):
    """The loss or the weights became NaN or infinite: the level stops, its last good checkpoint is kept."""


# A ticket maker is called only when a level starts fresh (not when it resumes), since making one can be costly
# (pruning, scoring, transferring).
TicketMaker = Callable[[], Ticket]


def train_ticket(ctx: RunContext, workdir: str, level: int, make_ticket: TicketMaker, desc: str, *,
                 on_step: dict[int, Callable] | None = None, log=print) -> tuple[train.TrainState, dict]:
    """Train the ticket of `level` from its rewind step to the end of the schedule, resuming if possible.

    on_step maps a global step to a callback(state) run when training reaches that step (level 0 saves its
    rewind state). Returns the final state and its test metrics {'loss', 'accuracy'}.
    """
    ckpt_dir, metrics_path = wd.checkpoints_dir(workdir, level), wd.metrics_path(workdir, level)
    on_step = dict(on_step or {})
    if checkpoint.latest_step(ckpt_dir) is not None:
        state = checkpoint.restore_state(ckpt_dir, ctx.template_state, log=log)
        _truncate_metrics(metrics_path, int(state.step))
    else:
        if os.path.exists(metrics_path) and wd.is_primary():  # lines of a start whose checkpoints are gone
            os.remove(metrics_path)
        ticket = make_ticket()
        masks.validate(ticket.mask, ticket.params)
        state = ctx.fresh_state(ticket.params, ticket.batch_stats, ticket.mask, ticket.rewind_step)
        checkpoint.save_tree(wd.ticket_dir(workdir, level), {
            "params": state.params, "batch_stats": ticket.batch_stats, "mask": ticket.mask,
            "step": ticket.rewind_step})
        if ticket.rewind_step in on_step:
            on_step[ticket.rewind_step](state)
    state, test = _fit(ctx, state, ckpt_dir, metrics_path, desc, on_step)
    if test is None:  # restored at the end of training: no epoch ran, so nothing was evaluated yet
        test = ctx.trainer.evaluate(state.params, state.batch_stats, ctx.data)
    return state, test


def train_and_record(ctx: RunContext, workdir: str, level: int, make_ticket: TicketMaker, desc: str,
                     method: str, *, log=print, on_step=None, **extra) -> dict:
    """Train one level (resumably) and add its record to WORKDIR/results.json; the step every run repeats."""
    state, test = train_ticket(ctx, workdir, level, make_ticket, desc, on_step=on_step, log=log)
    record = make_record(ctx, state, test, level, method, **extra)
    wd.add_record(workdir, record)
    log(wd.summary_line(record))
    return record


def make_record(ctx: RunContext, state: train.TrainState, test: dict, level: int, method: str, **extra) -> dict:
    """The results.json record of a finished level (deterministic: no timings, so resumed runs match)."""
    kept, total = masks.count(state.mask, ctx.prunable)
    return {"level": level, "method": method, "model": ctx.model_name, "dataset": ctx.config.data.name,
            "seed": ctx.config.seed, "recipe_id": wd.recipe_id(ctx.config.to_dict()),
            "sparsity": 1.0 - kept / total, "kept_weights": kept, "prunable_weights": total,
            "test_accuracy": test["accuracy"], "test_loss": test["loss"], "steps": int(state.step),
            "rewind_step": ctx.rewind_step, **extra}


def _progress(total, initial, desc, enabled):
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=initial, desc=desc, unit="step", disable=not (enabled and wd.is_primary()),
                leave=False, file=sys.stderr, dynamic_ncols=True)


def _truncate_metrics(path: str, last_step: int) -> None:
    """Drop metric lines past the restored checkpoint (they are recomputed identically)."""
    if not os.path.exists(path) or not wd.is_primary():
        return
    with open(path) as f:
        lines = [line for line in f if _metrics_step(line) <= last_step]
    with open(path, "w") as f:
        f.writelines(lines)


def _metrics_step(line: str) -> float:
    """The step of a metrics line; a damaged line (a write cut by a kill) sorts after every step, so it is dropped."""
    try:
        return json.loads(line)["step"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return float("inf")


def _fit(ctx: RunContext, state, ckpt_dir, metrics_path, desc, on_step):
    trainer, cfg = ctx.trainer, ctx.config.train
    spe, end = trainer.steps_per_epoch, ctx.total_steps
    step = int(state.step)
    bar = _progress(end, step, desc, ctx.config.progress)
    totals, epoch_start_time, test, last_save = None, time.time(), None, time.time()
    while step < end:
        stop = min((step // spe + 1) * spe, end, *[s for s in on_step if s > step])
        if cfg.steps_per_call:
            stop = min(stop, step + cfg.steps_per_call)
        state, sums = trainer.train_steps(state, ctx.data, stop - step)
        _check_finite(state, sums, stop, desc, ctx.config.train.lr)
        totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
        bar.update(stop - step)
        step = stop
        if step in on_step:
            on_step[step](state)
        if step % spe == 0 or step == end:
            entry = _epoch_entry(ctx, state, totals, time.time() - epoch_start_time)
            bar.set_postfix(loss=f"{entry['train_loss']:.3f}", acc=f"{entry['train_accuracy']:.3f}")
            if wd.is_primary():
                with open(metrics_path, "a") as f:
                    f.write(json.dumps(entry) + "\n")
            if step == end:  # the last epoch is always evaluated: its numbers are the level's result
                test = {"loss": entry["test_loss"], "accuracy": entry["test_accuracy"]}
            # Saves stall training, so they come at most every `checkpoint_every_secs` (and at the end): a kill
            # loses at most that much work, and the resumed run recomputes it identically.
            if step == end or time.time() - last_save >= cfg.checkpoint_every_secs:
                checkpoint.save_state(ckpt_dir, state)
                last_save = time.time()
            totals, epoch_start_time = None, time.time()
    bar.close()
    return state, test


@jax.jit
def _all_finite(tree):
    """One device reduction (not one eager call per leaf) per chunk of steps."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]))


def _check_finite(state, sums, step: int, desc: str, lr: float) -> None:
    """Stop at once when the loss or a weight is NaN/inf: nothing of it is saved, the last checkpoint stays."""
    if not bool(_all_finite((sums["loss"], state.params))):
        raise TrainingDiverged(f"{desc} diverged by step {step}: the loss or weights are NaN or infinite. Lower "
                               f"--config.train.lr (now {lr}) or add --config.train.warmup_epochs; the last good "
                               "checkpoint is kept and the same command resumes from it.")


def _epoch_entry(ctx: RunContext, state, totals, seconds):
    step = int(state.step)
    epoch = -(-step // ctx.trainer.steps_per_epoch)
    count = float(totals["count"])
    entry = {"epoch": epoch, "step": step, "lr": float(ctx.trainer.schedule(step - 1)),
             "train_loss": float(totals["loss"]) / count, "train_accuracy": float(totals["correct"]) / count,
             "time_s": round(seconds, 3), "images_per_s": round(count / max(seconds, 1e-9), 1)}
    if epoch % ctx.config.train.eval_every_epochs == 0 or step == ctx.total_steps:
        test = ctx.trainer.evaluate(state.params, state.batch_stats, ctx.data)
        entry.update(test_loss=test["loss"], test_accuracy=test["accuracy"])
    return entry
