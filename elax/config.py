"""The one config schema of elax runs (ml_collections), its defaults (the CIFAR-10 ResNet recipe of ELTH.md
section 2), and validation that fails early with the key to fix."""

import ml_collections

MODES = ("imp", "transfer", "baseline", "experiment", "report")
BASELINES = ("reinit", "random", "magnitude", "snip", "grasp", "synflow")


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

    c.report = ml_collections.ConfigDict()
    c.report.runs = ()               # run dirs to read (report mode)
    c.report.out = ""                # "" = WORKDIR/report
    return c


def _fail(key, problem, fix=""):
    raise ValueError(f"config.{key}: {problem}" + (f" {fix}" if fix else ""))


def validate(c: ml_collections.ConfigDict) -> None:
    """Raise ValueError naming the first bad key, before any data is loaded or any step runs."""
    if c.mode not in MODES:
        _fail("mode", f"unknown mode {c.mode!r}.", f"Valid: {', '.join(MODES)}.")
    if c.mode == "report":
        return
    from elax import data, models  # light: no dataset is read, no model is built beyond its dataclass
    if c.data.name not in data.DATASETS:
        _fail("data.name", f"unknown dataset {c.data.name!r}.", f"Valid: {', '.join(data.DATASETS)}.")
    try:
        models.get_model(c.model.name)
    except ValueError as e:
        _fail("model.name", str(e))
    t, lot = c.train, c.lottery
    if t.epochs <= 0:
        _fail("train.epochs", f"must be > 0, got {t.epochs}.")
    if t.batch_size <= 0:
        _fail("train.batch_size", f"must be > 0, got {t.batch_size}.")
    if t.lr <= 0:
        _fail("train.lr", f"must be > 0, got {t.lr}.")
    if t.dtype not in ("float32", "bfloat16"):
        _fail("train.dtype", f"must be 'float32' or 'bfloat16', got {t.dtype!r}.")
    if list(t.milestones) != sorted(t.milestones):
        _fail("train.milestones", f"must be increasing epochs, got {tuple(t.milestones)}.")
    if lot.levels < 0:
        _fail("lottery.levels", f"must be >= 0 (0 = dense training only), got {lot.levels}.")
    if not 0.0 < lot.prune_fraction < 1.0:
        _fail("lottery.prune_fraction", f"must be in (0, 1) (fraction of the remaining weights pruned per "
              f"level; the paper uses 0.2), got {lot.prune_fraction}.")
    if lot.rewind_steps < 0:
        _fail("lottery.rewind_steps", f"must be >= 0, got {lot.rewind_steps}.")
    if lot.scope not in ("global", "layer"):
        _fail("lottery.scope", f"must be 'global' or 'layer', got {lot.scope!r}.")
    if c.mode == "transfer" and not c.transfer.source:
        _fail("transfer.source", "is empty.", "Pass --config.transfer.source=WORKDIR_OF_AN_IMP_RUN.")
    if c.mode == "baseline":
        if c.baseline.method not in BASELINES:
            _fail("baseline.method", f"unknown baseline {c.baseline.method!r}.", f"Valid: {', '.join(BASELINES)}.")
        if not c.baseline.reference:
            _fail("baseline.reference", "is empty.",
                  "Pass --config.baseline.reference=WORKDIR of an IMP run of the same model.")
