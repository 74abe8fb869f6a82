"""Baseline tickets at the sparsities of a reference IMP run, trained like IMP levels (from its rewind step).

`BASELINES` is the registry of methods: adding a baseline is one function and one `BASELINES.register` call.
- reinit:    the reference level's IMP mask on a fresh random init.
- random:    that mask permuted within each layer (same per-layer density), on the rewind weights; with
             `baseline.distribution` uniform or erk, a random mask at that distribution's layer densities.
- magnitude: one-shot magnitude pruning of the rewind weights.
- snip, grasp, synflow: pruning-at-initialization scores (elax.scores) of the rewind weights.
- set, rigl: dynamic sparse training (`elax.mask_updates`) from the dense network's initialisation at step 0,
             with a random mask at `baseline.dst_distribution` (ERK) whose layers keep their counts while it
             moves every `baseline.dst_every` steps.
The one-shot methods keep exactly as many weights as the reference level (`pruning.prune_to_sparsity`), ranked
globally or at the kept counts of `baseline.distribution`; SNIP and GraSP score the batches that training reads
at steps 0, 1, ... (`Trainer.batch`).
"""

import dataclasses
import functools
from typing import Callable

import jax
import ml_collections

from elax import config as config_lib, mask_updates, masks, pruning, scores, workdir as wd
from elax.config import fail
from elax.registry import Registry
from elax.runs.checks import check_baseline_settings, check_training
from elax.runs.context import RunContext, open_run, with_mask_update
from elax.runs.loop import Level, train_levels
from elax.runs.sources import check_same_classes, imp_record, inherit_recipe, select_levels, source_run
from elax.runs.tickets import load_ticket
from elax.ticket import Ticket


@dataclasses.dataclass(frozen=True)
class Matched:
    """What a baseline matches: the reference's dense ticket at the rewind point, its IMP ticket at the level, and
    that level's sparsity. `dense_scores` holds the one-shot scores of `dense` by score function, shared by the
    levels of a run (the dense ticket, and so its scores, are the same for all of them)."""

    dense: Ticket
    imp: Ticket
    sparsity: float
    dense_scores: dict = dataclasses.field(default_factory=dict, compare=False)


@dataclasses.dataclass
class _Reference:
    """The reference IMP run as a baseline run reads it: its dense ticket and that ticket's scores, made once."""

    workdir: str
    dense_scores: dict = dataclasses.field(default_factory=dict)

    @functools.cached_property
    def dense(self) -> Ticket:
        return load_ticket(self.workdir, 0)

    def matched(self, level: int, sparsity: float) -> Matched:
        return Matched(self.dense, load_ticket(self.workdir, level), sparsity, self.dense_scores)


def check_baseline(c: ml_collections.ConfigDict) -> None:
    """A baseline run's config: what every training run needs, a known method and a reference run."""
    check_training(c)
    check_baseline_settings(c.baseline)
    if c.baseline.method not in BASELINES:
        fail("baseline.method", BASELINES.unknown(c.baseline.method))
    if not c.baseline.reference:
        fail("baseline.reference", "is empty.", "Set config.baseline.reference to the workdir of an IMP run of the "
             "same model.")


def run_baseline(config: ml_collections.ConfigDict, workdir: str, log=print) -> list[dict]:
    check_baseline(config)
    b = config.baseline
    reference_config, reference_records = source_run(b.reference, "baseline.reference")
    if reference_config["model"]["name"] != config.model.name:
        raise ValueError(f"The reference run is of {reference_config['model']['name']}, this baseline of "
                         f"{config.model.name}: baselines prune the same model as their reference IMP run. "
                         f"Set config.model.name={reference_config['model']['name']} or use another reference.")
    config = inherit_recipe(config, reference_config, "reference run", log)
    levels = select_levels(b.levels, reference_config, reference_records, f"baseline.reference {b.reference}",
                           "baseline.levels", minimum=1, log=log)
    ctx = open_run(config, log)
    method = BASELINES.get(b.method)
    if getattr(method, "mask_update", None):
        ctx = with_mask_update(ctx, mask_updates.MaskUpdate(mask_updates.MASK_UPDATES.get(method.mask_update),
                                                            dst_context(ctx)))
    sparsities = {level: imp_record(reference_records, level)["sparsity"] for level in levels}
    reference = _Reference(b.reference)
    if any(not wd.finished(workdir, level) for level in levels):  # else nothing of the reference is needed
        check_same_classes(reference.dense, ctx, f"baseline.reference {b.reference}")
    with ctx.claimed(workdir):
        train_levels(ctx, workdir, [
            Level(level, functools.partial(baseline_ticket, ctx, reference, level, sparsity),
                  f"{b.method} {ctx.model_name} level {level}", b.method,
                  {"reference_sparsity": sparsity, **record_extras(method, b)})
            for level, sparsity in sparsities.items()], log=log)
    return wd.load_results(workdir)


def baseline_ticket(ctx: RunContext, reference: _Reference, level: int, sparsity: float) -> Ticket:
    """The ticket of the config's baseline method matching the reference run's `level` at `sparsity`."""
    method = BASELINES.get(ctx.config.baseline.method)
    params, batch_stats, mask = method(ctx, reference.matched(level, sparsity))
    return Ticket(ctx.model, ctx.model_name, mask, masks.apply(params, mask), batch_stats, level=level,
                  rewind_step=0 if getattr(method, "from_init", False) else ctx.rewind_step)


DST_SETTINGS = ("dst_every", "dst_drop_fraction", "dst_end_fraction")


def record_extras(method, b: ml_collections.ConfigDict) -> dict:
    """What a baseline's records say besides the method: the layer distribution it used when not the default, the
    mask updates' settings of a dynamic method that are not the defaults (so that a report keeps runs of other
    settings apart), and the step a method that trains from the initialisation starts at."""
    def changed(key: str) -> bool:
        return b[key] != config_lib.KEYS[f"baseline.{key}"].default

    key = getattr(method, "distribution", "distribution")   # plain functions may read baseline.distribution
    extras = {"distribution": b[key]} if key and changed(key) else {}
    if getattr(method, "mask_update", None):
        extras.update({name: b[name] for name in DST_SETTINGS if changed(name)})
    return {**extras, **({"rewind_step": 0} if getattr(method, "from_init", False) else {})}


def dst_context(ctx: RunContext) -> mask_updates.UpdateContext:
    """The mask updates' context of a dynamic sparse training baseline (`baseline.dst_*`)."""
    b = ctx.config.baseline
    return mask_updates.UpdateContext(ctx.prunable, b.dst_every, ctx.total_steps, (
        ("drop_fraction", b.dst_drop_fraction), ("end_fraction", b.dst_end_fraction)))


@dataclasses.dataclass(frozen=True)
class Baseline:
    """A method whose ticket trains differently from the others (from the initialisation, step 0; with a
    registered mask update) or that reads another layer distribution than `baseline.distribution`, or none. Plain
    functions (ctx, matched) -> (params, batch_stats, mask) are baselines too."""

    make: Callable
    mask_update: str | None = None
    from_init: bool = False
    distribution: str | None = "distribution"   # the baseline.* key of its layer distribution; None: it has none

    def __call__(self, ctx: RunContext, m: Matched):
        return self.make(ctx, m)


# -- the methods: (ctx, matched) -> (params, batch_stats, mask) ---------------------------------------------------

def reinit(ctx: RunContext, m: Matched):
    params, batch_stats = ctx.init_variables(ctx.config.seed + 1_000_003)  # any init other than the reference's
    return params, batch_stats, m.imp.mask


def random(ctx: RunContext, m: Matched):
    distribution = ctx.config.baseline.distribution
    if distribution == "global":   # the paper's: the IMP level's layer densities
        mask = pruning.permute_within_layers(m.imp.mask, jax.random.key(ctx.config.seed), ctx.prunable)
    else:
        mask = _random_mask(ctx, m.dense.params, m.sparsity, distribution)
    return m.dense.params, m.dense.batch_stats, mask


def _random_mask(ctx: RunContext, params, sparsity: float, distribution: str):
    """A random mask of `params` at `sparsity`, spread over the layers as `distribution` says."""
    scores = pruning.random_scores(params, jax.random.key(ctx.config.seed))
    return pruning.prune_to_sparsity(scores, masks.build(params), sparsity, ctx.prunable, distribution=distribution)


def dynamic_start(ctx: RunContext, m: Matched):
    """The dense network's initialisation (the reference's, for the same seed) under a random mask at the dynamic
    baselines' distribution."""
    params, batch_stats = ctx.init_variables(ctx.config.seed)
    return params, batch_stats, _random_mask(ctx, params, m.sparsity, ctx.config.baseline.dst_distribution)


def one_shot(score_fn: Callable) -> Callable:
    """A baseline that scores the dense rewind weights with score_fn(ctx, dense) and keeps the top weights."""

    def method(ctx: RunContext, m: Matched):
        if score_fn not in m.dense_scores:
            m.dense_scores[score_fn] = score_fn(ctx, m.dense)
        score = m.dense_scores[score_fn]
        mask = pruning.prune_to_sparsity(score, masks.build(m.dense.params), m.sparsity, ctx.prunable,
                                         distribution=ctx.config.baseline.distribution)
        return m.dense.params, m.dense.batch_stats, mask

    return method


def synflow(ctx: RunContext, m: Matched):
    mask = scores.synflow_prune(m.dense.model.apply, m.dense.params, m.dense.batch_stats, ctx.data.image_shape,
                                m.sparsity, rounds=ctx.config.baseline.synflow_rounds, prunable=ctx.prunable,
                                distribution=ctx.config.baseline.distribution)
    return m.dense.params, m.dense.batch_stats, mask


def score_batches(ctx: RunContext) -> "_Batches":
    """The batches SNIP/GraSP sum over: what training reads at steps 0, 1, ... (`baseline.snip_batches`, 0 = one
    epoch), each made when reached, so an epoch is never held in memory at once."""
    return _Batches(ctx, ctx.config.baseline.snip_batches or ctx.trainer.steps_per_epoch)


@dataclasses.dataclass(frozen=True)
class _Batches:
    """Re-iterable (GraSP reads the batches twice), each batch made when reached."""

    ctx: RunContext
    count: int

    def __iter__(self):
        return (self.ctx.trainer.batch(self.ctx.data, step) for step in range(self.count))


# Scores are computed in float32 by the dense ticket's own (float32) model, whatever the training dtype.
def _snip(ctx: RunContext, dense: Ticket):
    return scores.snip_scores(dense.model.apply, dense.params, dense.batch_stats, score_batches(ctx))


def _grasp(ctx: RunContext, dense: Ticket):
    return scores.grasp_scores(dense.model.apply, dense.params, dense.batch_stats, score_batches(ctx),
                               temperature=ctx.config.baseline.grasp_temperature)


def _magnitude(ctx: RunContext, dense: Ticket):
    return pruning.magnitude_scores(dense.params)


BASELINES: Registry[Callable] = Registry("baseline")   # name -> method(ctx, matched) -> (params, batch_stats, mask)
BASELINES.register("reinit", Baseline(reinit, distribution=None))   # the IMP mask: no distribution of its own
BASELINES.register("random", random)
BASELINES.register("magnitude", one_shot(_magnitude))
BASELINES.register("snip", one_shot(_snip))
BASELINES.register("grasp", one_shot(_grasp))
BASELINES.register("synflow", synflow)
BASELINES.register("set", Baseline(dynamic_start, mask_update="set", from_init=True, distribution="dst_distribution"))
BASELINES.register("rigl", Baseline(dynamic_start, mask_update="rigl", from_init=True,
                                    distribution="dst_distribution"))
