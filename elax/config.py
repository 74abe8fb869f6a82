"""The one config schema of elax runs (ml_collections), its defaults (the CIFAR-10 ResNet recipe of ELTH.md
section 2), and validation that fails early with the key to fix."""

import ml_collections



def default_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.mode = "imp"             # imp | transfer | baseline | experiment | report
    c.seed = 0                 # replicate id: init, data order and augmentation all derive from it
    c.progress = True          # progress bars (stderr)

    c.model = ml_collections.ConfigDict()
    c.model.name = "cifar_resnet_20"

    c.data = ml_collections.ConfigDict()
    c.data.name = "cifar10"
    c.data.dir = ""            # "" = default places (see elax.data.looks_for)
    c.data.augment = True      # random crop (pad 4) + horizontal flip
    c.data.train_subset = 0    # train on this many images (a fixed subset, the same for every seed); 0 = all
    c.data.pad_to = 0          # zero-pad smaller images to this side (e.g. 28x28 -> 32 for a VGG); 0 = as they are
    c.data.source = "auto"     # auto | device | stream: the whole dataset on the devices, or streamed from disk by
    #                            Grain (auto: stream imagenet2012/imagefolder, device for the rest)
    c.data.workers = -1        # stream from disk: Grain worker processes; -1 = one per core (max 16); 0 = threads
    c.data.image_size = 224    # stream, encoded images: train RandomResizedCrop / eval centre crop (pixels)
    c.data.resize_size = 256   # stream, encoded images: eval resizes the shorter side to this, then crops
    c.data.crop_scale = (0.1, 1.0)    # stream, encoded images: RandomResizedCrop area range (ELTH.md section 2)
    c.data.crop_ratio = (0.8, 1.25)   # stream, encoded images: RandomResizedCrop aspect ratio range

    c.train = ml_collections.ConfigDict()
    c.train.epochs = 160
    c.train.batch_size = 128
    c.train.lr = 0.1
    c.train.momentum = 0.9
    c.train.weight_decay = 1e-4
    c.train.milestones = (80, 120)   # epochs; LR x gamma at each, applied per iteration
    c.train.gamma = 0.1
    c.train.warmup_epochs = 0.0
    c.train.dtype = "float32"        # compute dtype: float32 | bfloat16 (params stay float32)
    c.train.eval_batch_size = 1000
    c.train.steps_per_call = 0       # steps per jitted call; 0 = up to a whole epoch
    c.train.eval_every_epochs = 1    # test accuracy in the per-epoch metrics (the final one is always taken)
    c.train.checkpoint_every_secs = 60.0   # save the train state at an epoch's end at most this often (+ at the end)
    c.train.stack = 1                # baseline/ETT levels trained side by side in one program (device data only);
    #                                  equal to separate runs to float tolerance, slower so far (docs/performance.md)
    c.train.deterministic = False    # GPUs: deterministic XLA kernels (bit-identical resumes; slower). CPU: always

    c.lottery = ml_collections.ConfigDict()
    c.lottery.levels = 15            # IMP levels after the dense level 0
    c.lottery.prune_fraction = 0.2   # of the remaining weights, per level
    c.lottery.rewind_steps = 1000    # r: the step whose weights tickets rewind to (0 = original LTH)
    c.lottery.scope = "global"       # global | layer
    c.lottery.exclude = ()           # param path prefixes never pruned, e.g. ("head",)

    c.transfer = ml_collections.ConfigDict()
    c.transfer.source = ""           # workdir of the source IMP run (its data/train recipe is used)
    c.transfer.levels = ()           # source levels to transfer; () = all finished levels
    c.transfer.strategy = "append"   # append | interpolate | drop_last | interleave | official mapping string
    c.transfer.replica_masks = "copy"   # copy | permute (the paper's control)
    c.transfer.weights = "source"       # source | reinit

    c.baseline = ml_collections.ConfigDict()
    c.baseline.method = "random"     # reinit | random | magnitude | snip | grasp | synflow
    c.baseline.reference = ""        # workdir of an IMP run of the same model: its sparsities and recipe
    c.baseline.levels = ()           # reference levels to match; () = all finished levels >= 1
    c.baseline.snip_batches = 0      # batches summed by SNIP/GraSP; 0 = one epoch
    c.baseline.synflow_rounds = 100
    c.baseline.grasp_temperature = 200.0

    c.experiment = ml_collections.ConfigDict()
    c.experiment.source_model = "cifar_resnet_8"
    c.experiment.target_models = ("cifar_resnet_14",)
    c.experiment.baselines = ("random", "snip")
    c.experiment.seeds = ()          # replicates, each in WORKDIR/seed_<s>/; () = the one `seed`, in WORKDIR
    c.experiment.concurrent_runs = 0  # runs trained at once (threads); 0 = 3 on CPU unless streamed, else 1

    c.report = ml_collections.ConfigDict()
    c.report.runs = ()               # run dirs to read (report mode)
    c.report.out = ""                # "" = WORKDIR/report
    return c


def _fail(key, problem, fix=""):
    raise ValueError(f"config.{key}: {problem}" + (f" {fix}" if fix else ""))


def modes() -> tuple[str, ...]:
    from elax.runs import RUNNERS
    return (*RUNNERS, "report")


def steps_per_epoch(num_train: int, batch_size: int) -> int:
    return -(-num_train // batch_size)


def validate(c: ml_collections.ConfigDict) -> None:
    """Raise ValueError naming the first bad key, before any data is loaded or any step runs."""
    if c.mode not in modes():
        _fail("mode", f"unknown mode {c.mode!r}.", f"Valid: {', '.join(modes())}.")
    if c.mode == "report":
        return
    _validate_data(c.data)
    _validate_model("model.name", c.model.name)
    from elax import data
    if c.data.name in data.STREAMED_ONLY:  # encoded images, decoded to data.image_size: known before any scan
        _check_input_size(c, (c.data.image_size, c.data.image_size))
    _validate_train(c.train)
    _validate_lottery(c.lottery)
    if c.mode == "transfer":
        _validate_transfer(c)
    if c.mode == "baseline":
        _validate_baseline(c.baseline.method, "baseline.method")
        if not c.baseline.reference:
            _fail("baseline.reference", "is empty.",
                  "Pass --config.baseline.reference=WORKDIR of an IMP run of the same model.")
    if c.mode == "experiment":
        _validate_experiment(c)


def validate_for_dataset(c: ml_collections.ConfigDict, num_train: int, image_shape: tuple) -> None:
    """The checks that need the training set's size and image shape (known once the data is read, before any
    step)."""
    _check_input_size(c, image_shape)
    t = c.train
    if t.batch_size > num_train:
        _fail("train.batch_size", f"{t.batch_size} is larger than the {num_train} training images.",
              "Use a smaller batch (or more data).")
    per_epoch = steps_per_epoch(num_train, t.batch_size)
    if c.lottery.rewind_steps >= t.epochs * per_epoch:
        _fail("lottery.rewind_steps", f"{c.lottery.rewind_steps} is not before the end of training "
              f"({t.epochs} epochs x {per_epoch} steps = {t.epochs * per_epoch}), so pruned levels "
              "would train nothing.", "Use a smaller rewind step or more epochs.")


def _check_input_size(c: ml_collections.ConfigDict, image_shape: tuple) -> None:
    from elax import data, models
    size = models.family_of(c.model.name).min_input_size
    if min(image_shape[:2]) >= size:
        return
    if c.data.name in data.STREAMED_ONLY:
        has, fix = (f"--config.data.image_size={c.data.image_size} crops {image_shape[0]}x{image_shape[1]}.",
                    f"Use --config.data.image_size={size} (and a --config.data.resize_size of at least that).")
    else:
        has, fix = (f"{c.data.name} has {image_shape[0]}x{image_shape[1]}.",
                    f"Pad them (--config.data.pad_to={size}) or use a dataset of larger images.")
    _fail("model.name", f"{c.model.name} needs images of at least {size}x{size} (its pools and strides would "
          f"leave nothing of smaller ones); {has}", fix)


def _validate_data(d) -> None:
    from elax import data  # light: no dataset is read
    if d.name not in data.DATASETS + data.STREAMED_ONLY:
        _fail("data.name", f"unknown dataset {d.name!r}.", f"Valid: {', '.join(data.DATASETS + data.STREAMED_ONLY)}.")
    if d.get("source", "auto") not in data.SOURCES:
        _fail("data.source", f"unknown source {d.source!r}.", f"Valid: {', '.join(data.SOURCES)}.")
    if d.name in data.STREAMED_ONLY and d.get("source") == "device":
        _fail("data.source", f"{d.name} does not fit on a device.", "Use --config.data.source=stream (or auto).")
    if d.train_subset < 0:
        _fail("data.train_subset", f"must be >= 0 (0 = the whole training split), got {d.train_subset}.")
    if d.train_subset and d.name in data.STREAMED_ONLY:
        _fail("data.train_subset", f"applies to datasets held in memory, not to {d.name}.", "Leave it 0.")
    if d.pad_to < 0:
        _fail("data.pad_to", f"must be >= 0 (0 = images as they are), got {d.pad_to}.")
    if d.pad_to and d.name in data.STREAMED_ONLY:
        _fail("data.pad_to", f"applies to datasets held in memory, not to {d.name} (its images are cropped to "
              "data.image_size).", "Leave it 0.")
    if not data.is_streamed(d):
        return
    if d.workers < -1:
        _fail("data.workers", f"must be >= -1 (-1 = one per CPU core, 0 = threads in this process), got {d.workers}.")
    if not 0 < d.image_size <= d.resize_size:
        _fail("data.image_size", f"must be > 0 and <= data.resize_size ({d.resize_size}), got {d.image_size}.")
    low, high = d.crop_scale
    if not 0 < low <= high <= 1:
        _fail("data.crop_scale", f"must be (low, high) with 0 < low <= high <= 1, got {tuple(d.crop_scale)}.")
    low, high = d.crop_ratio
    if not 0 < low <= high:
        _fail("data.crop_ratio", f"must be (low, high) with 0 < low <= high, got {tuple(d.crop_ratio)}.")


def _validate_model(key: str, name: str) -> None:
    """The model name resolves and the model builds (traced, not run) with no empty layer."""
    import math
    from elax import models
    try:
        model = models.get_model(name)
    except ValueError as e:
        _fail(key, str(e))
    try:
        shapes = models.variable_shapes(model, models.family_of(model).input_shape)
    except Exception as e:  # any build error of the family's module is a config problem
        _fail(key, f"{name!r} does not build: {e}")
    import jax
    empty = [path for path, leaf in jax.tree_util.tree_flatten_with_path(shapes["params"])[0]
             if math.prod(leaf.shape) == 0]
    if empty:
        _fail(key, f"{name!r} has empty layers (e.g. {jax.tree_util.keystr(empty[0])}).",
              "Check its width and depth.")


def _validate_train(t) -> None:
    if t.epochs <= 0:
        _fail("train.epochs", f"must be > 0, got {t.epochs}.")
    if t.batch_size <= 0:
        _fail("train.batch_size", f"must be > 0, got {t.batch_size}.")
    if not t.lr > 0 or t.lr == float("inf"):
        _fail("train.lr", f"must be a finite number > 0, got {t.lr}.")
    if t.dtype not in ("float32", "bfloat16"):
        _fail("train.dtype", f"must be 'float32' or 'bfloat16', got {t.dtype!r}.")
    if not 0 <= t.momentum < 1:
        _fail("train.momentum", f"must be in [0, 1) (SGD's momentum; the paper uses 0.9), got {t.momentum}.")
    if not 0 <= t.weight_decay < float("inf"):
        _fail("train.weight_decay", f"must be a finite number >= 0, got {t.weight_decay}.")
    if list(t.milestones) != sorted(t.milestones) or any(not m > 0 for m in t.milestones):
        _fail("train.milestones", f"must be increasing epochs > 0, got {tuple(t.milestones)}.")
    if not 0 < t.gamma <= 1:
        _fail("train.gamma", f"must be in (0, 1] (the LR factor at each milestone), got {t.gamma}.")
    if not t.warmup_epochs >= 0:
        _fail("train.warmup_epochs", f"must be >= 0, got {t.warmup_epochs}.")
    if t.eval_every_epochs <= 0:
        _fail("train.eval_every_epochs", f"must be >= 1, got {t.eval_every_epochs}.")
    if t.steps_per_call < 0:
        _fail("train.steps_per_call", f"must be >= 0 (0 = up to a whole epoch), got {t.steps_per_call}.")
    if not t.checkpoint_every_secs >= 0:
        _fail("train.checkpoint_every_secs", f"must be >= 0 (0 = every epoch), got {t.checkpoint_every_secs}.")
    if t.get("stack", 1) < 1:
        _fail("train.stack", f"must be >= 1 (runs per program; 1 = one at a time), got {t.stack}.")
    if t.eval_batch_size <= 0:
        _fail("train.eval_batch_size", f"must be > 0, got {t.eval_batch_size}.")


def _validate_lottery(lot) -> None:
    if lot.levels < 0:
        _fail("lottery.levels", f"must be >= 0 (0 = dense training only), got {lot.levels}.")
    if not 0.0 < lot.prune_fraction < 1.0:
        _fail("lottery.prune_fraction", f"must be in (0, 1) (fraction of the remaining weights pruned per "
              f"level; the paper uses 0.2), got {lot.prune_fraction}.")
    if lot.rewind_steps < 0:
        _fail("lottery.rewind_steps", f"must be >= 0, got {lot.rewind_steps}.")
    if lot.scope not in ("global", "layer"):
        _fail("lottery.scope", f"must be 'global' or 'layer', got {lot.scope!r}.")


def _validate_transfer(c) -> None:
    import os
    from elax import workdir
    t = c.transfer
    if not t.source:
        _fail("transfer.source", "is empty.", "Pass --config.transfer.source=WORKDIR_OF_AN_IMP_RUN.")
    _validate_transfer_options(t)
    source = workdir.read_json(os.path.join(os.path.expanduser(t.source), workdir.CONFIG_FILE))
    if source is None:
        return
    source_model = source["model"]["name"]
    if c.model.name == source_model:
        _fail("model.name", f"is the source run's model ({source_model}): a transfer moves its tickets to another "
              "depth.", "Pick a deeper or shallower model of its family.")
    plan = _validate_plan(source_model, c.model.name, t.strategy, models_key="model.name")
    if t.replica_masks == "permute" and not plan.replicas():
        _fail("transfer.replica_masks", f"'permute' shuffles the masks of replicated blocks, and {plan.strategy!r} "
              f"from {source_model} to {c.model.name} replicates none.", "Use 'copy' (the default).")


def _validate_transfer_options(t) -> None:
    from elax import transfer
    for key, valid in (("replica_masks", transfer.REPLICA_MASKS), ("weights", transfer.WEIGHTS)):
        if t[key] not in valid:
            _fail(f"transfer.{key}", f"unknown option {t[key]!r}.", f"Valid: {', '.join(valid)}.")


def _validate_plan(source: str, target: str, strategy: str, fix: str = "", *, models_key: str):
    """The transfer plan from `source` to `target` by `strategy`; a config error naming the key if there is none."""
    from elax import transfer
    try:
        transfer.check_transferable(source, target)
    except ValueError as e:
        _fail(models_key, f"{target} cannot take tickets of {source}: {e}")
    try:
        return transfer.plan(source, target, strategy)
    except ValueError as e:
        _fail("transfer.strategy", f"{strategy!r} cannot move {source} to {target}: {e}", fix)


def _validate_baseline(method: str, key: str) -> None:
    from elax.runs import BASELINES
    if method not in BASELINES:
        _fail(key, f"unknown baseline {method!r}.", f"Valid: {', '.join(BASELINES)}.")


def _validate_experiment(c) -> None:
    e = c.experiment
    _validate_model("experiment.source_model", e.source_model)
    _validate_transfer_options(c.transfer)
    targets = tuple(e.target_models)
    if not targets or len(set(targets)) != len(targets) or e.source_model in targets:
        _fail("experiment.target_models", f"must be one or more distinct models other than the source "
              f"{e.source_model!r}, got {targets}.", "E.g. --config.experiment.target_models=cifar_resnet_32,"
              "cifar_resnet_56; for IMP on one model alone use --config.mode=imp.")
    # One strategy serves every target; deeper and shallower targets (the paper's ImageNet 26 -> 18, 34) need two.
    split = ("One experiment stretches or squeezes: run the deeper and the shallower targets as two experiments "
             "with the same --workdir (the second reuses the source's finished IMP runs)." if len(targets) > 1 else "")
    for target in targets:
        _validate_model("experiment.target_models", target)
        _validate_plan(e.source_model, target, c.transfer.strategy, split, models_key="experiment.target_models")
    if len(set(e.baselines)) != len(e.baselines):
        _fail("experiment.baselines", f"names a baseline twice: {tuple(e.baselines)}.")
    for method in e.baselines:
        _validate_baseline(method, "experiment.baselines")
    whole = all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in e.seeds)
    if len(set(e.seeds)) != len(e.seeds) or not whole:
        _fail("experiment.seeds", f"must be distinct integers >= 0, got {tuple(e.seeds)}.",
              "E.g. --config.experiment.seeds='(0,1,2)'.")
    if e.seeds and c.seed not in (0, *e.seeds):   # 0: the default, not a choice
        seeds = ",".join(map(str, (*e.seeds, c.seed)))
        _fail("seed", f"{c.seed} is not used: experiment.seeds={tuple(e.seeds)} picks the seeds.",
              f"Add it there (--config.experiment.seeds='({seeds})'), or drop experiment.seeds.")
    if not isinstance(e.concurrent_runs, int) or e.concurrent_runs < 0:
        _fail("experiment.concurrent_runs", f"must be an integer >= 0, got {e.concurrent_runs!r}.",
              "0 picks by backend (3 on CPU, 1 on accelerators or for streamed data); 1 runs one at a time.")
