"""The config schema of elax runs: every key once, with its default, its meaning and what it is to a run's workdir.

Defaults are the CIFAR-10 ResNet recipe of ELTH.md section 2. What a key is to a workdir (`Key` fields):
- recipe: it changes results, so it is part of the recipe (`workdir.recipe_id`): "always"; "streamed" (only of
  runs that stream their data); "if_set" (only when not at its default, so runs made before the key existed keep
  their recipe ids);
- resumable: it may change when a run resumes (it extends the run, or changes only speed or output);
- path: a filesystem path (`~` is the home directory); run_path: the workdir of another run (compared by where it
  points); host_local: it may differ between the processes of a multi-process run; names: registry names, which
  a shell may give as one comma-separated string.
A section that only some run modes read (`Section.read_by`) may differ freely in the others' workdirs.

This module checks what a key's value alone decides (`check`); checks that need datasets, models or other runs
live with those layers, and `elax.runs` composes them. It imports nothing from elax.
"""

import dataclasses
import math

import ml_collections

ALWAYS, STREAMED, IF_SET = "always", "streamed", "if_set"


@dataclasses.dataclass(frozen=True)
class Key:
    name: str
    default: object
    doc: str
    recipe: str | None = None
    resumable: bool = False
    path: bool = False
    run_path: bool = False
    host_local: bool = False
    names: bool = False


@dataclasses.dataclass(frozen=True)
class Section:
    name: str              # "" for the top-level keys
    doc: str
    keys: tuple
    read_by: tuple = ()    # the modes that read it; () = every mode


def _k(name, default, doc, **meaning) -> Key:
    return Key(name, default, doc, **meaning)


SCHEMA = (
    Section("", "What the run is.", (
        _k("mode", "imp", "imp | transfer | baseline | experiment | report"),
        _k("seed", 0, "replicate id: init, data order and augmentation all derive from it"),
        _k("progress", True, "progress: a bar per run on a terminal (stderr); a line per epoch when the output is a "
           "file or a pipe (stdout)", resumable=True),
        _k("tensorboard", False, "also write each epoch's metrics as TensorBoard scalars into its level_XX folder "
           "(pip install tensorboardX)", resumable=True),
    )),
    Section("model", "The network.", (
        _k("name", "cifar_resnet_20", "a registered model name, e.g. cifar_resnet_20, cifar_vgg_16_8"),
    )),
    Section("data", "The dataset and how it is read.", (
        _k("name", "cifar10", "a registered dataset (python main.py --help lists them)", recipe=ALWAYS),
        _k("dir", "", "where its files are; '' = the default places (elax.data.looks_for)", resumable=True,
           path=True, host_local=True),
        _k("download", False, "fetch a missing CIFAR-10/100 from its official URL (MD5-checked) into data.dir, "
           "$ELAX_DATA_DIR or ~/.elax/data; False: elax never downloads", resumable=True),
        _k("augment", True, "random crop (pad 4) + horizontal flip of data held on the devices; "
           "RandomResizedCrop + flip of streamed images", recipe=ALWAYS),
        _k("train_subset", 0, "train on this many images (a fixed subset, the same for every seed); 0 = all",
           recipe=ALWAYS),
        _k("pad_to", 0, "zero-pad smaller images to this side (e.g. 28x28 -> 32 for a VGG); 0 = as they are",
           recipe=IF_SET),
        _k("source", "auto", "auto | device | stream: the whole dataset on the devices, or streamed from disk by "
           "Grain (auto: stream the datasets that only stream)", recipe=STREAMED),
        _k("workers", -1, "streamed: Grain worker processes; -1 = one per core (at most 16); 0 = threads; at most "
           "2 per core, the batches of an epoch and what free memory holds (~200 MB each)", resumable=True),
        _k("image_size", 224, "streamed encoded images: train RandomResizedCrop / eval centre crop (pixels)",
           recipe=STREAMED),
        _k("resize_size", 256, "streamed encoded images: eval resizes the shorter side to this, then crops",
           recipe=STREAMED),
        _k("crop_scale", (0.1, 1.0), "streamed encoded images: RandomResizedCrop area range", recipe=STREAMED),
        _k("crop_ratio", (0.8, 1.25), "streamed encoded images: RandomResizedCrop aspect ratio range",
           recipe=STREAMED),
    )),
    Section("train", "How every level trains.", (
        _k("epochs", 160, "epochs per level (the LR schedule spans them)", recipe=ALWAYS),
        _k("batch_size", 128, "global batch, split over all devices", recipe=ALWAYS),
        _k("optimizer", "sgd", "sgd (momentum, coupled L2 as torch.optim.SGD) | adamw (decoupled decay) | a "
           "registered optimizer", recipe=IF_SET),
        _k("lr", 0.1, "peak learning rate", recipe=ALWAYS),
        _k("momentum", 0.9, "sgd: momentum (no Nesterov)", recipe=ALWAYS),
        _k("weight_decay", 1e-4, "sgd: L2 added to the gradient; adamw: decoupled decay, times the LR",
           recipe=ALWAYS),
        _k("adam_b1", 0.9, "adamw: decay of the first moment", recipe=IF_SET),
        _k("adam_b2", 0.999, "adamw: decay of the second moment", recipe=IF_SET),
        _k("adam_eps", 1e-8, "adamw: added to the second moment's root", recipe=IF_SET),
        _k("schedule", "multistep", "multistep (x gamma at each milestone) | cosine (to final_lr at the end) | a "
           "registered schedule; both after warmup_epochs of linear warmup from 0", recipe=IF_SET),
        _k("milestones", (80, 120), "multistep: epochs at which the LR is multiplied by gamma (per iteration)",
           recipe=ALWAYS),
        _k("gamma", 0.1, "multistep: the LR factor at each milestone", recipe=ALWAYS),
        _k("final_lr", 0.0, "cosine: the LR at the end of training", recipe=IF_SET),
        _k("warmup_epochs", 0.0, "linear warmup from 0 to lr over this many epochs", recipe=ALWAYS),
        _k("label_smoothing", 0.0, "cross-entropy against (1 - s) one-hot + s / classes", recipe=IF_SET),
        _k("dtype", "float32", "compute dtype: float32 | bfloat16 (params stay float32)", recipe=ALWAYS),
        _k("eval_batch_size", 1000, "test batch size (the result does not depend on it)", resumable=True),
        _k("steps_per_call", 0, "steps per jitted call; 0 = up to a whole epoch", resumable=True),
        _k("eval_every_epochs", 1, "test accuracy in the per-epoch metrics (the final one is always taken)",
           resumable=True),
        _k("checkpoint_every_secs", 60.0, "save the train state at an epoch's end at most this often (and at "
           "the end)", resumable=True),
        _k("stack", 1, "baseline/ETT levels trained side by side in one program (device data only); equal to "
           "separate runs to float tolerance, slower so far (docs/performance.md)", resumable=True),
        _k("deterministic", False, "GPUs: deterministic XLA kernels (bit-identical resumes; slower). CPU: always",
           resumable=True),
    )),
    Section("mask_update", "Masks that change during training (dynamic sparse training); none for lottery "
            "tickets.", (
        _k("method", "none", "none | a registered mask update (elax.mask_updates)", recipe=IF_SET),
        _k("every", 100, "steps between two mask updates", recipe=IF_SET),
    )),
    Section("lottery", "Iterative magnitude pruning with rewinding.", (
        _k("levels", 15, "IMP levels after the dense level 0", resumable=True),
        _k("prune_fraction", 0.2, "of the remaining weights, per level", recipe=ALWAYS),
        _k("rewind_steps", 1000, "r: the step whose weights tickets rewind to (0 = the original LTH)",
           recipe=ALWAYS),
        _k("scope", "global", "global | layer: rank weights over all prunable layers, or within each",
           recipe=ALWAYS),
        _k("exclude", (), "param path prefixes never pruned, e.g. ('head',)", recipe=ALWAYS),
        _k("structure", "unstructured", "unstructured | N:M: every group of M weights along a kernel's input axis "
           "keeps at most N, reached over the levels (elax.nm); recorded with every level, like a transfer's "
           "strategy"),
        _k("layer_fractions", (), "((path prefix, fraction), ...): layers pruned on their own, at their own "
           "fraction per level (Frankle & Carbin prune the output layer at half the rate: (('head', 0.1),))",
           recipe=IF_SET),
    )),
    Section("transfer", "Elastic ticket transformation (mode transfer).", (
        _k("source", "", "workdir of the source IMP run (its data and train recipe are used)", path=True,
           run_path=True),
        _k("levels", (), "source levels to transfer; () = all finished levels", resumable=True),
        _k("strategy", "append", "append | interpolate | drop_last | interleave | an official mapping string"),
        _k("replica_masks", "copy", "copy | permute (the paper's control)"),
        _k("weights", "source", "source | reinit"),
    ), read_by=("transfer", "experiment")),
    Section("baseline", "Baseline tickets at an IMP run's sparsities (mode baseline).", (
        _k("method", "random", "a registered baseline: reinit | random | magnitude | snip | grasp | synflow | set | rigl"),
        _k("reference", "", "workdir of an IMP run of the same model: its sparsities and recipe", path=True,
           run_path=True),
        _k("levels", (), "reference levels to match; () = all finished levels >= 1", resumable=True),
        _k("distribution", "global", "how the sparsity spreads over layers: global (one ranking; random: the IMP "
           "level's layer densities, the paper's control) | uniform | erk (elax.distributions)"),
        _k("snip_batches", 0, "batches summed by SNIP/GraSP; 0 = one epoch"),
        _k("synflow_rounds", 100, "rounds of iterative SynFlow"),
        _k("grasp_temperature", 200.0, "GraSP's softmax temperature"),
        _k("dst_distribution", "erk", "set, rigl: the initial mask's layer densities (RigL's ERK)"),
        _k("dst_every", 100, "set, rigl: steps between mask updates (RigL's 100)"),
        _k("dst_drop_fraction", 0.3, "set, rigl: fraction of each layer's kept weights dropped and regrown, "
           "decayed by a cosine to 0 (RigL's 0.3)"),
        _k("dst_end_fraction", 0.75, "set, rigl: no mask update after this fraction of training (RigL's 0.75)"),
    ), read_by=("baseline", "experiment")),
    Section("experiment", "The E-LTH experiment in one command (mode experiment).", (
        _k("source_model", "cifar_resnet_8", "the model whose IMP tickets are transferred", resumable=True),
        _k("target_models", ("cifar_resnet_14",), "models of the source's family that receive them",
           resumable=True, names=True),
        _k("baselines", ("random", "snip"), "baselines trained on each target", resumable=True, names=True),
        _k("seeds", (), "replicates, each in WORKDIR/seed_<s>/; () = the one `seed`, in WORKDIR", resumable=True),
        _k("concurrent_runs", 0, "runs trained at once (threads); 0 = 3 on CPU unless streamed, else 1",
           resumable=True),
    )),
    Section("report", "A report of finished runs (mode report).", (
        _k("runs", (), "run dirs to read; () = WORKDIR", resumable=True, path=True),
        _k("out", "", "where to write it; '' = WORKDIR/report", resumable=True, path=True),
    )),
)


def keys() -> dict[str, Key]:
    """{'train.lr': Key, ...} of every key of the schema, in schema order."""
    return {f"{s.name}.{k.name}" if s.name else k.name: k for s in SCHEMA for k in s.keys}


KEYS = keys()


def default_config() -> ml_collections.ConfigDict:
    """A config holding every key at its default."""
    c = ml_collections.ConfigDict()
    for section in SCHEMA:
        node = c
        if section.name:
            c[section.name] = ml_collections.ConfigDict()
            node = c[section.name]
        for key in section.keys:
            node[key.name] = key.default
    return c


def unread_prefixes(mode: str) -> tuple[str, ...]:
    """'transfer.'-style prefixes of the sections that runs of `mode` never read."""
    return tuple(f"{s.name}." for s in SCHEMA if s.read_by and mode not in s.read_by)


# -- errors and value checks ---------------------------------------------------------------------------------------

class ConfigError(ValueError):
    """A config value that cannot work; the message names the key (`config.train.lr: ...`) and the fix."""

    def __init__(self, key: str, problem: str, fix: str = ""):
        super().__init__(f"config.{key}: {problem}" + (f" {fix}" if fix else ""))
        self.key = key


def fail(key: str, problem: str, fix: str = ""):
    raise ConfigError(key, problem, fix)


def steps_per_epoch(num_train: int, batch_size: int) -> int:
    return -(-num_train // batch_size)


def check(c: ml_collections.ConfigDict) -> None:
    """The checks each key's value decides alone (ranges, types): ConfigError naming the first bad key."""
    _check_seed(c.seed)
    _check_data(c.data)
    _check_train(c.train)
    _check_mask_update(c.get("mask_update", None))
    _check_lottery(c.lottery)


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


MAX_SEED = 2**32 - 1   # jax.random.key takes a uint32-sized seed


def _check_seed(seed) -> None:
    if not _whole(seed) or not 0 <= seed <= MAX_SEED:
        fail("seed", f"must be a whole number in [0, {MAX_SEED}], got {seed!r}.")


def _check_data(d) -> None:
    if d.train_subset < 0:
        fail("data.train_subset", f"must be >= 0 (0 = the whole training split), got {d.train_subset}.")
    if d.pad_to < 0:
        fail("data.pad_to", f"must be >= 0 (0 = images as they are), got {d.pad_to}.")


def check_stream_settings(d) -> None:
    """The settings of the streamed pipeline (checked for runs that stream)."""
    if d.workers < -1:
        fail("data.workers", f"must be >= -1 (-1 = one per CPU core, 0 = threads in this process), got {d.workers}.")
    if not 0 < d.image_size <= d.resize_size:
        fail("data.image_size", f"must be > 0 and <= data.resize_size ({d.resize_size}), got {d.image_size}.")
    low, high = d.crop_scale
    if not 0 < low <= high <= 1:
        fail("data.crop_scale", f"must be (low, high) with 0 < low <= high <= 1, got {tuple(d.crop_scale)}.")
    low, high = d.crop_ratio
    if not 0 < low <= high:
        fail("data.crop_ratio", f"must be (low, high) with 0 < low <= high, got {tuple(d.crop_ratio)}.")


def _check_train(t) -> None:
    if t.epochs <= 0:
        fail("train.epochs", f"must be > 0, got {t.epochs}.")
    if t.batch_size <= 0:
        fail("train.batch_size", f"must be > 0, got {t.batch_size}.")
    if not _finite(t.lr) or t.lr <= 0:
        fail("train.lr", f"must be a finite number > 0, got {t.lr}.")
    if t.dtype not in ("float32", "bfloat16"):
        fail("train.dtype", f"must be 'float32' or 'bfloat16', got {t.dtype!r}.")
    if not 0 <= t.momentum < 1:
        fail("train.momentum", f"must be in [0, 1) (SGD's momentum; the paper uses 0.9), got {t.momentum}.")
    if not _finite(t.weight_decay) or t.weight_decay < 0:
        fail("train.weight_decay", f"must be a finite number >= 0, got {t.weight_decay}.")
    for key in ("adam_b1", "adam_b2"):
        if not 0 <= t[key] < 1:
            fail(f"train.{key}", f"must be in [0, 1), got {t[key]}.")
    if not _finite(t.adam_eps) or t.adam_eps <= 0:
        fail("train.adam_eps", f"must be a finite number > 0, got {t.adam_eps}.")
    if list(t.milestones) != sorted(t.milestones) or any(not (_finite(m) and m > 0) for m in t.milestones):
        fail("train.milestones", f"must be increasing epochs > 0, got {tuple(t.milestones)}.")
    if not 0 < t.gamma <= 1:
        fail("train.gamma", f"must be in (0, 1] (the LR factor at each milestone), got {t.gamma}.")
    if not _finite(t.final_lr) or not 0 <= t.final_lr <= t.lr:
        fail("train.final_lr", f"must be a number in [0, train.lr = {t.lr}], got {t.final_lr}.")
    if not _finite(t.warmup_epochs) or t.warmup_epochs < 0:
        fail("train.warmup_epochs", f"must be a finite number >= 0, got {t.warmup_epochs}.")
    if t.warmup_epochs > t.epochs:
        fail("train.warmup_epochs", f"{t.warmup_epochs} is longer than the training ({t.epochs} epochs).",
             "Use fewer warmup epochs (or more epochs).")
    if not 0 <= t.label_smoothing < 1:
        fail("train.label_smoothing", f"must be in [0, 1), got {t.label_smoothing}.")
    if t.eval_every_epochs <= 0:
        fail("train.eval_every_epochs", f"must be >= 1, got {t.eval_every_epochs}.")
    if t.steps_per_call < 0:
        fail("train.steps_per_call", f"must be >= 0 (0 = up to a whole epoch), got {t.steps_per_call}.")
    if not t.checkpoint_every_secs >= 0:
        fail("train.checkpoint_every_secs", f"must be >= 0 (0 = every epoch), got {t.checkpoint_every_secs}.")
    if t.stack < 1:
        fail("train.stack", f"must be >= 1 (runs per program; 1 = one at a time), got {t.stack}.")
    if t.eval_batch_size <= 0:
        fail("train.eval_batch_size", f"must be > 0, got {t.eval_batch_size}.")


def _check_mask_update(m) -> None:
    if m is not None and (not _whole(m.every) or m.every < 1):
        fail("mask_update.every", f"must be a whole number of steps >= 1, got {m.every!r}.")


def _check_lottery(lot) -> None:
    if lot.levels < 0:
        fail("lottery.levels", f"must be >= 0 (0 = dense training only), got {lot.levels}.")
    if not 0.0 < lot.prune_fraction < 1.0:
        fail("lottery.prune_fraction", f"must be in (0, 1) (fraction of the remaining weights pruned per level; "
             f"the paper uses 0.2), got {lot.prune_fraction}.")
    if lot.rewind_steps < 0:
        fail("lottery.rewind_steps", f"must be >= 0, got {lot.rewind_steps}.")
    if lot.scope not in ("global", "layer"):
        fail("lottery.scope", f"must be 'global' or 'layer', got {lot.scope!r}.")
    for entry in lot.layer_fractions:
        if not (isinstance(entry, (tuple, list)) and len(entry) == 2 and isinstance(entry[0], str)
                and _finite(entry[1]) and 0 < entry[1] < 1):
            fail("lottery.layer_fractions", f"must be (path prefix, fraction in (0, 1)) pairs, got {entry!r}.",
                 "E.g. config.lottery.layer_fractions=\"(('head', 0.1),)\".")


def check_baseline_values(b) -> None:
    """The baseline keys whose values alone decide (the method and distributions are checked by elax.runs)."""
    if not _whole(b.dst_every) or b.dst_every < 1:
        fail("baseline.dst_every", f"must be a whole number of steps >= 1, got {b.dst_every!r}.")
    for key in ("dst_drop_fraction", "dst_end_fraction"):
        if not (_finite(b[key]) and 0 < b[key] <= 1):
            fail(f"baseline.{key}", f"must be in (0, 1], got {b[key]!r}.")


def check_experiment_values(c: ml_collections.ConfigDict) -> None:
    """The experiment keys whose values alone decide (models and baselines are checked by elax.runs)."""
    e = c.experiment
    if len(set(e.baselines)) != len(e.baselines):
        fail("experiment.baselines", f"names a baseline twice: {tuple(e.baselines)}.")
    if len(set(e.seeds)) != len(e.seeds) or not all(_whole(s) and 0 <= s <= MAX_SEED for s in e.seeds):
        fail("experiment.seeds", f"must be distinct integers >= 0, got {tuple(e.seeds)}.",
             "E.g. config.experiment.seeds='(0,1,2)'.")
    if e.seeds and c.seed not in (0, *e.seeds):   # 0: the default, not a choice
        seeds = ",".join(map(str, (*e.seeds, c.seed)))
        fail("seed", f"{c.seed} is not used: experiment.seeds={tuple(e.seeds)} picks the seeds.",
             f"Add it there (config.experiment.seeds='({seeds})'), or drop experiment.seeds.")
    if not _whole(e.concurrent_runs) or e.concurrent_runs < 0:
        fail("experiment.concurrent_runs", f"must be an integer >= 0, got {e.concurrent_runs!r}.",
             "0 picks by backend (3 on CPU, 1 on accelerators or for streamed data); 1 runs one at a time.")


# -- the reference page (docs/configuration.md) ------------------------------------------------------------------

_RECIPE_WORDS = {ALWAYS: "recipe", STREAMED: "recipe of streamed runs", IF_SET: "recipe when set"}


def _roles(key: Key) -> str:
    roles = [_RECIPE_WORDS[key.recipe]] if key.recipe else []
    roles += [word for flag, word in ((key.resumable, "resumable"), (key.path, "path"), (key.run_path, "a run's dir"),
                                      (key.host_local, "per host"), (key.names, "names")) if flag]
    return ", ".join(roles)


def reference_markdown() -> str:
    """The configuration reference: every key of the schema with its default, meaning and role; written to
    docs/configuration.md by `python -m elax.config > docs/configuration.md` (a test checks it is current)."""
    lines = ["# Configuration reference", "",
             "Every key of `elax.config.default_config()`; set any with `--config.SECTION.KEY=VALUE` or in a config "
             "file. Generated from the schema in `elax/config.py` (`python -m elax.config > docs/configuration.md`).",
             "", "Roles: **recipe** keys change results and make the recipe id that every record carries (runs of "
             "different recipes are never averaged); *recipe of streamed runs* only for streamed data; *recipe when "
             "set* only when not at the default (keys added later, so that earlier runs keep their ids). "
             "**resumable** keys may change when a run resumes. A section read only by some modes may differ "
             "freely in the others' workdirs.", ""]
    for section in SCHEMA:
        readers = f" Read by modes: {', '.join(section.read_by)}." if section.read_by else ""
        lines += [f"## {section.name or 'top level'}", "", f"{section.doc}{readers}", "",
                  "| key | default | meaning | role |", "|---|---|---|---|"]
        for key in section.keys:
            name = f"{section.name}.{key.name}" if section.name else key.name
            doc = key.doc.replace("|", "\\|")
            lines.append(f"| `{name}` | `{key.default!r}` | {doc} | {_roles(key)} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(reference_markdown(), end="")
