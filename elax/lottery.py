"""Iterative Magnitude Pruning with weight rewinding, and the resumable machinery every run shares.

A run trains a sequence of tickets ("levels"), each in WORKDIR/level_XX/:
    ticket/         Orbax: the ticket this level starts from {params, batch_stats, mask, step}
    checkpoints/    Orbax CheckpointManager: the latest train state (resume point), saved every epoch
    metrics.jsonl   one line per epoch: losses, accuracies, learning rate, time
WORKDIR/results.json holds one record per finished level, WORKDIR/config.json the run's config, and an IMP run
keeps WORKDIR/rewind/ (Orbax: params and batch_stats at the rewind step r of level 0).

A killed run started again with the same command skips finished levels and resumes the level in progress from
its latest checkpoint; since data order and augmentation derive from (seed, step), it ends with the same results.
"""

import dataclasses
import functools
import json
import os
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections

from elax import checkpoint, config as config_lib, data as data_lib, masks, pruning, train
from elax.models import get_model, init_variables
from elax.ticket import Ticket

# Config keys that may change when a run resumes (they extend the run or change only speed/output).
RESUMABLE_CHANGES = ("lottery.levels", "transfer.levels", "baseline.levels", "progress", "train.steps_per_call",
                     "train.eval_batch_size", "report", "data.dir")


@dataclasses.dataclass(frozen=True)
class Experiment:
    """Everything fixed for one run: config, model, data on the devices, and the jitted trainer."""

    config: ml_collections.ConfigDict
    model: Any
    data: train.DeviceData
    trainer: train.Trainer
    num_classes: int

    @property
    def model_name(self) -> str:
        return self.config.model.name

    @property
    def total_steps(self) -> int:
        return self.config.train.epochs * self.trainer.steps_per_epoch

    @property
    def rewind_step(self) -> int:
        return self.config.lottery.rewind_steps

    @property
    def prunable(self):
        return masks.prunable_kernels(self.config.lottery.exclude)

    def init_variables(self, seed: int):
        return init_variables(self.model, jax.random.key(seed), self.data.image_shape)

    @functools.cached_property
    def template_state(self) -> train.TrainState:
        """A state of the right structure to restore checkpoints into."""
        v = self.init_variables(0)
        return self.fresh_state(v["params"], v["batch_stats"], masks.build(v["params"]), 0)

    def fresh_state(self, params, batch_stats, mask, step: int) -> train.TrainState:
        return train.create_state(params, batch_stats, mask, self.trainer.tx, step)


def setup(config: ml_collections.ConfigDict) -> Experiment:
    """Validate `config`, load the data onto the devices, and build the model and trainer."""
    config_lib.validate(config)
    dataset = data_lib.load(config.data.name, config.data.dir or None)
    dtype = jnp.bfloat16 if config.train.dtype == "bfloat16" else jnp.float32
    model = get_model(config.model.name, num_classes=dataset.num_classes, dtype=dtype)
    trainer = make_trainer(config, model, len(dataset.train_labels), train.make_mesh(), dtype)
    if config.lottery.rewind_steps > config.train.epochs * trainer.steps_per_epoch:
        raise ValueError(f"config.lottery.rewind_steps={config.lottery.rewind_steps} is past the end of training "
                         f"({config.train.epochs} epochs x {trainer.steps_per_epoch} steps).")
    data = train.put_on_devices(dataset, trainer.mesh)
    return Experiment(config, model, data, trainer, dataset.num_classes)


def make_trainer(config: ml_collections.ConfigDict, model, num_train: int, mesh, dtype,
                 **options) -> train.Trainer:
    """The Trainer of `config`'s recipe (optimizer, LR schedule, batch, seed, augmentation) for `num_train`
    training examples; `options` are further `train.Trainer` fields (e.g. masked, fused_loop)."""
    t = config.train
    steps_per_epoch = -(-num_train // t.batch_size)
    return train.Trainer(
        model=model, tx=train.make_optimizer(t.momentum, t.weight_decay),
        schedule=train.lr_schedule(t.lr, steps_per_epoch, t.milestones, t.gamma, t.warmup_epochs),
        mesh=mesh, batch_size=t.batch_size, steps_per_epoch=steps_per_epoch, seed=config.seed,
        augment=config.data.augment, compute_dtype=dtype,
        eval_batch_size=_eval_batch_size(t.eval_batch_size, mesh.size), **options)


def _eval_batch_size(requested: int, num_devices: int) -> int:
    return max(num_devices, requested - requested % num_devices)


# -- workdir bookkeeping --------------------------------------------------------------------------------------

def level_dir(workdir: str, level: int) -> str:
    return os.path.join(workdir, f"level_{level:02d}")


def load_results(workdir: str) -> list[dict]:
    return checkpoint.read_json(os.path.join(workdir, "results.json"), default=[])


def find_record(workdir: str, level: int) -> dict | None:
    return next((r for r in load_results(workdir) if r["level"] == level), None)


def add_record(workdir: str, record: dict) -> None:
    records = [r for r in load_results(workdir) if r["level"] != record["level"]] + [record]
    checkpoint.write_json(os.path.join(workdir, "results.json"), sorted(records, key=lambda r: r["level"]))


def _flatten(d: dict, prefix="") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
    return out


def claim_workdir(workdir: str, config: ml_collections.ConfigDict) -> None:
    """Create `workdir` or check that the run in it was started with a compatible config."""
    path = os.path.join(workdir, "config.json")
    current = json.loads(config.to_json())
    previous = checkpoint.read_json(path)
    if previous is not None:
        old, new = _flatten(previous), _flatten(current)
        changed = [k for k in sorted(set(old) | set(new))
                   if old.get(k) != new.get(k) and not k.startswith(RESUMABLE_CHANGES)]
        if changed:
            diffs = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:5])
            raise ValueError(
                f"{workdir} holds a run with a different config ({diffs}). Finished work there is kept: "
                "resume it with its original settings, or pass a new --workdir for the new settings.")
    checkpoint.write_json(path, current)


# -- training one ticket ----------------------------------------------------------------------------------------

def _progress(total, initial, desc, enabled):
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=initial, desc=desc, unit="step", disable=not enabled, leave=False,
                file=sys.stderr, dynamic_ncols=True)


def _truncate_metrics(path: str, last_step: int) -> None:
    """Drop metric lines past the restored checkpoint (they are recomputed identically)."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = [l for l in f if l.strip() and json.loads(l)["step"] <= last_step]
    with open(path, "w") as f:
        f.writelines(lines)


def train_level(exp: Experiment, directory: str, make_start: Callable[[], tuple], start_step: int, desc: str,
                on_step: dict[int, Callable] | None = None) -> tuple[train.TrainState, dict]:
    """Train a ticket from `start_step` to the end of the schedule, resuming from `directory` if possible.

    make_start() -> (params, batch_stats, mask) is called only when the level starts fresh. on_step maps a
    global step to a callback(state) run when training reaches that step (level 0 saves its rewind state).
    Returns the final state and its test metrics {'loss', 'accuracy'}.
    """
    ckpt_dir, metrics_path = os.path.join(directory, "checkpoints"), os.path.join(directory, "metrics.jsonl")
    on_step = dict(on_step or {})
    if checkpoint.latest_step(ckpt_dir) is not None:
        state = checkpoint.restore_state(ckpt_dir, exp.template_state)
        _truncate_metrics(metrics_path, int(state.step))
    else:
        params, batch_stats, mask = make_start()
        masks.validate(mask, params)
        state = exp.fresh_state(params, batch_stats, mask, start_step)
        checkpoint.save_tree(os.path.join(directory, "ticket"), {
            "params": state.params, "batch_stats": batch_stats, "mask": mask, "step": start_step})
        if start_step in on_step:
            on_step[start_step](state)
        checkpoint.save_state(ckpt_dir, state)
    state, test = _fit(exp, state, ckpt_dir, metrics_path, desc, on_step)
    if test is None:  # restored at the end of training: no epoch ran, so nothing was evaluated yet
        test = exp.trainer.evaluate(state.params, state.batch_stats, exp.data)
    return state, test


def _fit(exp, state, ckpt_dir, metrics_path, desc, on_step):
    trainer, cfg = exp.trainer, exp.config.train
    spe, end = trainer.steps_per_epoch, exp.total_steps
    step = int(state.step)
    bar = _progress(end, step, desc, exp.config.progress)
    totals, epoch_start_time, test = None, time.time(), None
    while step < end:
        stop = min((step // spe + 1) * spe, end, *[s for s in on_step if s > step])
        if cfg.steps_per_call:
            stop = min(stop, step + cfg.steps_per_call)
        state, sums = trainer.train_steps(state, exp.data, stop - step)
        totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
        bar.update(stop - step)
        step = stop
        if step in on_step:
            on_step[step](state)
        if step % spe == 0 or step == end:
            entry = _epoch_entry(exp, state, totals, time.time() - epoch_start_time)
            bar.set_postfix(loss=f"{entry['train_loss']:.3f}", acc=f"{entry['train_accuracy']:.3f}")
            with open(metrics_path, "a") as f:
                f.write(json.dumps(entry) + "\n")
            if step == end:  # the last epoch is always evaluated: its numbers are the level's result
                test = {"loss": entry["test_loss"], "accuracy": entry["test_accuracy"]}
            checkpoint.save_state(ckpt_dir, state)
            totals, epoch_start_time = None, time.time()
    bar.close()
    return state, test


def _epoch_entry(exp, state, totals, seconds):
    step = int(state.step)
    epoch = -(-step // exp.trainer.steps_per_epoch)
    count = float(totals["count"])
    entry = {"epoch": epoch, "step": step, "lr": float(exp.trainer.schedule(step - 1)),
             "train_loss": float(totals["loss"]) / count, "train_accuracy": float(totals["correct"]) / count,
             "time_s": round(seconds, 3), "images_per_s": round(count / max(seconds, 1e-9), 1)}
    if epoch % exp.config.train.eval_every_epochs == 0 or step == exp.total_steps:
        test = exp.trainer.evaluate(state.params, state.batch_stats, exp.data)
        entry.update(test_loss=test["loss"], test_accuracy=test["accuracy"])
    return entry


def make_record(exp: Experiment, state: train.TrainState, test: dict, level: int, method: str, **extra) -> dict:
    """The results.json record of a finished level (deterministic: no timings, so resumed runs match)."""
    kept, total = masks.count(state.mask, exp.prunable)
    return {"level": level, "method": method, "model": exp.model_name, "dataset": exp.config.data.name,
            "seed": exp.config.seed, "sparsity": 1.0 - kept / total, "kept_weights": kept,
            "prunable_weights": total, "test_accuracy": test["accuracy"], "test_loss": test["loss"],
            "steps": int(state.step), **extra}


def train_and_record(exp: Experiment, workdir: str, level: int, make_start: Callable[[], tuple], start_step: int,
                     desc: str, method: str, log=print, on_step=None, **extra) -> None:
    """Train one level (resumably) and add its record to WORKDIR/results.json; the step every run repeats."""
    state, test = train_level(exp, level_dir(workdir, level), make_start, start_step, desc, on_step)
    record = make_record(exp, state, test, level, method, rewind_step=exp.rewind_step, **extra)
    add_record(workdir, record)
    log(summary_line(record))


def summary_line(record: dict) -> str:
    return (f"level {record['level']:2d} | {record['method']:<9} | {record['model']} | sparsity "
            f"{record['sparsity']:7.2%} | test accuracy {record['test_accuracy']:7.2%}")


# -- IMP ------------------------------------------------------------------------------------------------------

def run_imp(config: ml_collections.ConfigDict, workdir: str, log=print) -> list[dict]:
    """IMP with rewinding: level 0 dense (rewind state saved at step r), then prune, rewind, retrain."""
    exp = setup(config)  # validates the config first
    claim_workdir(workdir, config)
    rewind_dir = os.path.join(workdir, "rewind")
    for level in range(config.lottery.levels + 1):
        if find_record(workdir, level):
            continue
        if level == 0:
            def make_start():
                v = exp.init_variables(config.seed)
                return v["params"], v["batch_stats"], masks.build(v["params"])
            save_rewind = lambda s: checkpoint.save_tree(
                rewind_dir, {"params": s.params, "batch_stats": s.batch_stats, "step": int(s.step)})
            train_and_record(exp, workdir, 0, make_start, 0, "level 0 (dense)", "imp", log,
                             on_step={exp.rewind_step: save_rewind})
        else:
            make_start = lambda level=level: _imp_start(exp, workdir, level)
            train_and_record(exp, workdir, level, make_start, exp.rewind_step, f"level {level}", "imp", log)
    return load_results(workdir)


def _imp_start(exp: Experiment, workdir: str, level: int):
    """Prune level-1's final weights, then rewind the survivors: (rewind params * mask, rewind BN, mask)."""
    previous = checkpoint.restore_state(
        os.path.join(level_dir(workdir, level - 1), "checkpoints"), exp.template_state)
    if int(previous.step) != exp.total_steps:
        raise RuntimeError(f"level {level - 1} in {workdir} has not finished training (step {int(previous.step)} "
                           f"of {exp.total_steps}); delete its results record to retrain it.")
    lot = exp.config.lottery
    mask = pruning.prune_magnitude(previous.params, previous.mask, lot.prune_fraction, exp.prunable, lot.scope)
    rewind = checkpoint.load_tree(os.path.join(workdir, "rewind"))
    return masks.apply(rewind["params"], mask), rewind["batch_stats"], mask


def load_ticket(workdir: str, level: int) -> Ticket:
    """The ticket of `level` of a finished or running run: mask, rewound masked params, BN statistics.

    Level 0 of an IMP run is the dense network at the rewind point.
    """
    config = run_config(workdir)
    ticket_dir = os.path.join(level_dir(workdir, level), "ticket")
    if not os.path.isdir(ticket_dir):
        levels = sorted(int(d[6:]) for d in os.listdir(workdir) if d.startswith("level_"))
        raise FileNotFoundError(f"{workdir} has no ticket for level {level}; levels present: {levels}.")
    tree = checkpoint.load_tree(ticket_dir)
    rewind_dir = os.path.join(workdir, "rewind")
    if level == 0 and config["mode"] == "imp":
        tree.update(checkpoint.load_tree(rewind_dir))
    record = find_record(workdir, level) or {}
    num_classes = tree["params"]["head"]["kernel"].shape[-1]
    return Ticket(model=get_model(config["model"]["name"], num_classes=num_classes),
                  model_name=config["model"]["name"], mask=tree["mask"],
                  params=masks.apply(tree["params"], tree["mask"]), batch_stats=tree["batch_stats"], level=level,
                  rewind_step=int(tree["step"]),
                  meta={"workdir": workdir, "method": record.get("method", config["mode"]),
                        "test_accuracy": record.get("test_accuracy")})


# -- Elastic ticket transformation runs -----------------------------------------------------------------------

def run_config(workdir: str, what: str = "") -> dict:
    """The config.json of an elax run directory; a clear error naming `what` pointed at it if there is none."""
    config = checkpoint.read_json(os.path.join(workdir, "config.json"))
    if config is None:
        raise FileNotFoundError(f"{what + ' ' if what else ''}{workdir!r} is not an elax run directory (no "
                                "config.json). Pass the --workdir of an IMP run (python main.py --config "
                                "configs/cifar_resnet.py ...).")
    return config


def source_run(workdir: str, what: str) -> tuple[dict, list[dict]]:
    """(config, results) of a finished or running run that another run builds on; clear error if absent."""
    return run_config(workdir, what), load_results(workdir)


def inherit_recipe(config, source_config: dict, what: str, log=print) -> ml_collections.ConfigDict:
    """`config` with the recipe of the run it builds on: its data, training and rewind step (E-LTH trains a
    transferred or baseline ticket exactly like an IMP level of the source). A `data.dir` given here wins."""
    config = config.copy_and_resolve_references()
    recipe = {**{f"data.{k}": v for k, v in source_config["data"].items() if k != "dir"},
              **{f"train.{k}": v for k, v in source_config["train"].items()},
              "lottery.rewind_steps": source_config["lottery"]["rewind_steps"]}
    if not config.data.dir:
        recipe["data.dir"] = source_config["data"]["dir"]
    changed = []
    for key, value in recipe.items():
        section, name = key.split(".")
        value = tuple(value) if isinstance(value, list) else value
        if config[section][name] != value:
            changed.append(f"{key}={value!r}")
            config[section][name] = value
    if changed:
        log(f"Recipe of the {what}: {', '.join(changed)}")
    return config


def select_levels(requested, records, minimum: int = 0) -> list[int]:
    finished = sorted(r["level"] for r in records if r["method"] == "imp" and r["level"] >= minimum)
    levels = list(requested) or finished
    missing = [level for level in levels if level not in finished]
    if missing:
        raise ValueError(f"Levels {missing} are not finished in the source run; finished levels: {finished}.")
    return levels


def run_transfer(config: ml_collections.ConfigDict, workdir: str, log=print) -> list[dict]:
    """Train the elastic transfer of each selected level's ticket of an IMP source run, like an IMP level."""
    from elax import transfer

    config_lib.validate(config)
    t = config.transfer
    source_config, source_records = source_run(t.source, "transfer.source")
    config = inherit_recipe(config, source_config, "source run", log)
    levels = select_levels(t.levels, source_records)
    exp = setup(config)
    claim_workdir(workdir, config)
    strategy_label = t.strategy + ("/permuted-replica-masks" if t.replica_masks == "permute" else "") + (
        "/reinit" if t.weights == "reinit" else "")
    for level in levels:
        if find_record(workdir, level):
            continue

        def make_start(level=level):
            ticket = load_ticket(t.source, level)
            moved = transfer.transfer_ticket(ticket, exp.model, strategy=t.strategy, replica_masks=t.replica_masks,
                                             weights=t.weights, seed=config.seed)
            return moved.params, moved.batch_stats, moved.mask

        source_record = next(r for r in source_records if r["level"] == level and r["method"] == "imp")
        train_and_record(exp, workdir, level, make_start, exp.rewind_step,
                         f"ett {source_config['model']['name']}->{exp.model_name} level {level}", "ett", log,
                         source_model=source_config["model"]["name"], source_level=level,
                         source_sparsity=source_record["sparsity"], strategy=strategy_label)
    return load_results(workdir)
