"""The E-LTH experiment in miniature on scikit-learn's digits (no download), about a minute on 2 CPU cores:
IMP on ResNet-14 (source) and ResNet-20 (target), both 8 channels wide, ETT 14 -> 20, random and SNIP baselines
on ResNet-20 at the same sparsities, and the comparison report.

    python main.py --config configs/quickstart.py                      # workdir: runs/quickstart
    python main.py --config configs/quickstart.py --config.mode=imp    # only IMP on model.name
"""

from elax.config import default_config


def get_config():
    config = default_config()
    config.mode = "experiment"
    config.model.name = "cifar_resnet_14_8"
    config.data.name = "digits"
    config.data.augment = False      # flipped digits are other digits
    config.train.epochs = 6
    config.train.batch_size = 64
    config.train.lr = 0.05
    config.train.milestones = (4,)
    config.train.eval_batch_size = 360
    config.lottery.levels = 5
    config.lottery.prune_fraction = 0.6  # the paper prunes 0.2 per level; 0.6 reaches 99% sparsity in 5 levels
    config.lottery.rewind_steps = 23  # one epoch of 1437 images at batch 64
    config.experiment.source_model = "cifar_resnet_14_8"   # the smallest stretchable ResNet (2 blocks/stage)
    config.experiment.target_models = ("cifar_resnet_20_8",)
    config.experiment.baselines = ("random", "snip")
    return config
