"""The checks of a run's config, composed from the layers that own them: the values (`elax.config`), the data
(`elax.data.catalog`), the model (`elax.models`), the registries (optimizer, schedule, mask update) and, once the
data is read, what depends on it. Each raises ConfigError naming the key to fix, before anything is written.
"""

import math

import jax
import ml_collections

from elax import config as config_lib, distributions, mask_updates, masks, models, nm, optim, transfer
from elax.config import fail
from elax.data import catalog


def check_training(c: ml_collections.ConfigDict) -> None:
    """What every mode that trains needs of its config, before any data is read."""
    config_lib.check(c)
    try:
        structure = nm.parse(c.lottery.structure)
    except ValueError as e:
        fail("lottery.structure", str(e))
    if structure and (c.lottery.scope != "global" or c.lottery.layer_fractions):
        key = "lottery.layer_fractions" if c.lottery.layer_fractions else "lottery.scope"
        fail(key, f"does not apply to N:M tickets ({c.lottery.structure}): each level keeps the same number of "
             "weights in every group of every layer.", f"Leave {key} at its default with a structure.")
    catalog.check_config(c.data)
    check_model_name("model.name", c.model.name)
    check_prefixes(c)
    info = catalog.get(c.data.name)
    if info.streamed_only:   # encoded images are cropped to data.image_size: known before any scan
        check_input_size(c, (c.data.image_size, c.data.image_size))
    for key, registry in (("train.optimizer", optim.OPTIMIZERS), ("train.schedule", optim.SCHEDULES),
                          ("mask_update.method", mask_updates.MASK_UPDATES)):
        section, name = key.split(".")
        if c[section][name] not in registry:
            fail(key, registry.unknown(c[section][name]))


def check_model_name(key: str, name: str):
    """The model `name` resolves, builds (traced, not run) as its family's protocol asks, with no empty layer;
    returns the model."""
    try:
        model = models.get_model(name)
        models.check_model(model)
    except ValueError as e:
        fail(key, str(e))
    shapes = models.variable_shapes(model, models.family_of(model).input_shape)
    empty = [path for path, leaf in jax.tree_util.tree_flatten_with_path(shapes["params"])[0]
             if math.prod(leaf.shape) == 0]
    if empty:
        fail(key, f"{name!r} has empty layers (e.g. {jax.tree_util.keystr(empty[0])}).", "Check its width and depth.")
    return model


def check_prefixes(c: ml_collections.ConfigDict) -> None:
    """Every path prefix of lottery.exclude and lottery.layer_fractions names a layer the model prunes (a typo
    would silently prune it, or prune it at the global rate)."""
    model = models.get_model(c.model.name)
    family = models.family_of(model)
    shapes = models.variable_shapes(model, family.input_shape)["params"]
    kernels = list(masks.prunable_leaves(shapes, family.prunable))
    pruned = list(masks.prunable_leaves(shapes, masks.prunable_kernels(family.prune_exclude + tuple(
        c.lottery.exclude))))
    for key, prefixes, paths in (("lottery.exclude", c.lottery.exclude, kernels),
                                 ("lottery.layer_fractions", [e[0] for e in c.lottery.layer_fractions], pruned)):
        for prefix in prefixes:
            if not any(masks.under(path, prefix) for path in paths):
                fail(key, f"{prefix!r} names no layer that {c.model.name} prunes.",
                     f"Its prunable layers: {_layer_names(paths)}.")


def _layer_names(paths: list[str], shown: int = 8) -> str:
    names = list(dict.fromkeys(path.rpartition("/")[0] for path in paths))
    return ", ".join(names[:shown]) + (f", ... ({len(names)} in all)" if len(names) > shown else "")


def check_input_size(c: ml_collections.ConfigDict, image_shape: tuple) -> None:
    """The model takes images of `image_shape`: its downsampling leaves something of them, and its family finds
    no other problem (e.g. patches that do not tile them)."""
    family = models.family_of(c.model.name)
    size = family.min_input_size
    problem = family.input_problem(models.get_model(c.model.name), image_shape) if family.input_problem else None
    if problem:
        fail("model.name", f"{problem}.", "Pick a model that fits the images, or pad them (config.data.pad_to).")
    if min(image_shape[:2]) >= size:
        return
    if catalog.get(c.data.name).streamed_only:
        has, fix = (f"config.data.image_size={c.data.image_size} crops {image_shape[0]}x{image_shape[1]}.",
                    f"Use config.data.image_size={size} (and a config.data.resize_size of at least that).")
    else:
        has, fix = (f"{c.data.name} has {image_shape[0]}x{image_shape[1]}.",
                    f"Pad them (config.data.pad_to={size}) or use a dataset of larger images.")
    fail("model.name", f"{c.model.name} needs images of at least {size}x{size} (its pools and strides would "
         f"leave nothing of smaller ones); {has}", fix)


def check_for_dataset(c: ml_collections.ConfigDict, num_train: int, image_shape: tuple, devices: int) -> None:
    """The checks that need the training set's size and image shape (known once the data is read, before any
    step) and the number of devices."""
    check_input_size(c, image_shape)
    t = c.train
    if t.batch_size > num_train:
        fail("train.batch_size", f"{t.batch_size} is larger than the {num_train} training images.",
             "Use a smaller batch (or more data).")
    if t.batch_size % devices:
        fail("train.batch_size", f"{t.batch_size} must be divisible by the {devices} devices.")
    per_epoch = config_lib.steps_per_epoch(num_train, t.batch_size)
    if c.lottery.rewind_steps >= t.epochs * per_epoch:
        fail("lottery.rewind_steps", f"{c.lottery.rewind_steps} is not before the end of training "
             f"({t.epochs} epochs x {per_epoch} steps = {t.epochs * per_epoch}), so pruned levels would train "
             "nothing.", "Use a smaller rewind step or more epochs.")


def check_baseline_settings(b: ml_collections.ConfigDict) -> None:
    """The baseline section's values (the method is checked by the mode that reads it)."""
    config_lib.check_baseline_values(b)
    for key in ("distribution", "dst_distribution"):
        if b[key] not in distributions.DISTRIBUTIONS:
            fail(f"baseline.{key}", f"unknown distribution {b[key]!r}.",
                 f"Valid: {', '.join(distributions.DISTRIBUTIONS)}.")


def check_transfer_options(t: ml_collections.ConfigDict) -> None:
    for name in transfer.OPTIONS:
        if problem := transfer.option_problem(name, t[name]):
            fail(f"transfer.{name}", problem)


def check_plan(source: str, target: str, strategy: str, fix: str = "", *, models_key: str,
               replica_masks: str = "copy") -> transfer.Plan:
    """The transfer plan from `source` to `target` by `strategy`; ConfigError naming the key if there is none, or
    if `replica_masks` asks to permute the masks of replicas that the plan does not make."""
    try:
        transfer.check_transferable(source, target)
    except ValueError as e:
        fail(models_key, f"{target} cannot take tickets of {source}: {e}")
    try:
        plan = transfer.plan(source, target, strategy)
    except ValueError as e:
        fail("transfer.strategy", f"{strategy!r} cannot move {source} to {target}: {e}", fix)
    if replica_masks == "permute" and not plan.replicas():
        fail("transfer.replica_masks", f"'permute' shuffles the masks of replicated blocks, and {strategy!r} from "
             f"{source} to {target} replicates none.", "Use 'copy' (the default).")
    return plan
