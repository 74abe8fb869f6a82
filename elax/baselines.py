"""Baseline tickets at the sparsities of a reference IMP run, trained like IMP levels (from its rewind step).

- reinit:    the reference level's IMP mask on a fresh random init.
- random:    that mask permuted within each layer (same per-layer density), on the rewind weights.
- magnitude: one-shot global magnitude pruning of the rewind weights.
- snip, grasp, synflow: pruning-at-initialization scores (elax.scores) of the rewind weights, pruned globally.
The one-shot methods keep exactly as many weights as the reference level (`pruning.prune_to_sparsity`).
"""


import jax
import jax.numpy as jnp
import ml_collections

from elax import config as config_lib, data as data_lib, lottery, masks, pruning, scores


def run_baseline(config: ml_collections.ConfigDict, workdir: str, log=print) -> list[dict]:
    config_lib.validate(config)
    b = config.baseline
    reference_config, reference_records = lottery.source_run(b.reference, "baseline.reference")
    if reference_config["model"]["name"] != config.model.name:
        raise ValueError(f"The reference run is of {reference_config['model']['name']}, this baseline of "
                         f"{config.model.name}: baselines prune the same model as their reference IMP run. "
                         f"Set --config.model.name={reference_config['model']['name']} or use another reference.")
    config = lottery.inherit_recipe(config, reference_config, "reference run", log)
    levels = lottery.select_levels(b.levels, reference_records, minimum=1)
    exp = lottery.setup(config)
    lottery.claim_workdir(workdir, config)
    for level in levels:
        if lottery.find_record(workdir, level):
            continue
        reference = next(r for r in reference_records if r["level"] == level and r["method"] == "imp")
        make_start = lambda level=level, sparsity=reference["sparsity"]: baseline_ticket(
            exp, b.method, lottery.load_ticket(b.reference, 0), lottery.load_ticket(b.reference, level), sparsity)
        lottery.train_and_record(exp, workdir, level, make_start, exp.rewind_step, f"{b.method} level {level}",
                                 b.method, log, reference_sparsity=reference["sparsity"])
    return lottery.load_results(workdir)


def baseline_ticket(exp: lottery.Experiment, method: str, dense, imp, sparsity: float):
    """(params, batch_stats, mask) of baseline `method`; `dense` is the reference's level-0 (rewind) ticket and
    `imp` its ticket at the level being matched."""
    seed, b = exp.config.seed, exp.config.baseline
    if method == "reinit":
        fresh = exp.init_variables(seed + 1_000_003)  # any init other than the reference's
        return fresh["params"], fresh["batch_stats"], imp.mask
    if method == "random":
        mask = pruning.permute_within_layers(imp.mask, jax.random.key(seed), exp.prunable)
        return dense.params, dense.batch_stats, mask
    params, batch_stats, dense_mask = dense.params, dense.batch_stats, masks.build(dense.params)
    apply_fn = dense.model.apply  # float32: scores are computed at full precision
    if method == "magnitude":
        score = pruning.magnitude_scores(params)
    elif method == "snip":
        score = scores.snip_scores(apply_fn, params, batch_stats, score_batches(exp))
    elif method == "grasp":
        score = scores.grasp_scores(apply_fn, params, batch_stats, score_batches(exp),
                                    temperature=b.grasp_temperature)
    elif method == "synflow":
        mask = scores.synflow_prune(apply_fn, params, batch_stats, exp.data.image_shape, sparsity,
                                    rounds=b.synflow_rounds, prunable=exp.prunable)
        return params, batch_stats, mask
    else:
        raise ValueError(f"Unknown baseline {method!r}; valid: {', '.join(config_lib.BASELINES)}.")
    return params, batch_stats, pruning.prune_to_sparsity(score, dense_mask, sparsity, exp.prunable)


class score_batches:
    """Normalised (and, as in training, augmented) batches for SNIP/GraSP: `baseline.snip_batches`, 0 = an epoch.

    Re-iterable with the same batches each time (GraSP reads them twice) without holding an epoch in memory.
    """

    def __init__(self, exp: lottery.Experiment):
        self.exp = exp

    def __iter__(self):
        return _batches(self.exp)


def _batches(exp: lottery.Experiment):
    data, trainer = exp.data, exp.trainer
    n_batches = exp.config.baseline.snip_batches or trainer.steps_per_epoch
    key = jax.random.key(exp.config.seed)
    order = jax.random.permutation(key, data.num_train)
    for i in range(n_batches):
        idx = order[(i * trainer.batch_size + jnp.arange(trainer.batch_size)) % data.num_train]
        images = data.train_images[idx]
        if trainer.augment:
            images = data_lib.random_crop_flip(images, jax.random.fold_in(key, i))
        yield data_lib.normalize(images, data.mean, data.std), data.train_labels[idx]
