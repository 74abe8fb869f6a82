"""IMP on scikit-learn's digits (no download) with a small ResNet: a few minutes on 2 CPU cores.

    python main.py --config configs/quickstart.py
"""

from elax.config import default_config


def get_config():
    config = default_config()
    config.mode = "imp"
    config.model.name = "cifar_resnet_8"
    config.data.name = "digits"
    config.data.augment = False      # flipped digits are other digits
    config.train.epochs = 8
    config.train.batch_size = 64
    config.train.lr = 0.05
    config.train.milestones = (6,)
    config.train.eval_batch_size = 360
    config.lottery.levels = 5
    config.lottery.rewind_steps = 23  # one epoch of 1437 images at batch 64
    return config
