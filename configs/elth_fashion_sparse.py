"""Elastic tickets against sparse training from scratch, and N:M tickets, on Fashion-MNIST with the recipe of
configs/elth_fashion.py (ResNet-14 -> ResNet-20, width 8, 5 levels of 50%, 3 seeds), sized for a 2-core CPU.

    python main.py --config configs/elth_fashion_sparse.py --workdir runs/elth_fashion_sparse/dst
    python main.py --config configs/elth_fashion_sparse.py:nm --workdir runs/elth_fashion_sparse/nm
    python -m elax.report runs/elth_fashion_sparse --out runs/elth_fashion_sparse/report

- dst (the default): IMP on ResNet-14 and -20, ETT 14 -> 20 (append), and on ResNet-20 at the sparsities of its
  IMP levels: random pruning at ERK's layer densities, SET and RigL (from the initialisation, ERK masks, drop
  fraction 0.3 decayed by a cosine, no updates after 75% of training; RigL's defaults but for the interval: 25
  steps instead of 100, since this recipe trains 376 steps, so that 11 updates happen instead of 2).
- nm: the same IMP and ETT runs at the 1:4 structure, reached in two levels (4 -> 2 -> 1 kept per group of 4:
  2:4 at 50% sparsity, 1:4 at 75%); the stem conv (1 input channel, which 4 does not divide) is the only layer
  left dense.
"""

from elax.config import default_config


def get_config(part: str = "dst"):
    config = default_config()
    config.mode = "experiment"
    config.model.name = "cifar_resnet_14_8"
    config.data.name = "fashion_mnist"
    config.data.augment = False
    config.data.train_subset = 12_000
    config.train.epochs = 2
    config.train.batch_size = 64
    config.train.lr = 0.05
    config.train.milestones = (1.5,)
    config.train.eval_batch_size = 1000
    config.train.eval_every_epochs = 100
    config.lottery.levels = 5
    config.lottery.prune_fraction = 0.5
    config.lottery.rewind_steps = 38
    config.experiment.source_model = "cifar_resnet_14_8"
    config.experiment.target_models = ("cifar_resnet_20_8",)
    config.experiment.seeds = (0, 1, 2)
    if part == "nm":
        config.lottery.structure = "1:4"
        config.lottery.levels = 2
        config.experiment.baselines = ()
    else:
        config.baseline.distribution = "erk"
        config.baseline.dst_every = 25
        config.experiment.baselines = ("random", "set", "rigl")
    return config
