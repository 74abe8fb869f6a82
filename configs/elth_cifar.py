"""The E-LTH experiment on CIFAR-10 with the paper's recipe: IMP on ResNet-20 (source) and on ResNet-32 and
ResNet-56 (targets), ETT 20 -> 32 and 20 -> 56, the baselines on each target, and the report.

    python main.py --config configs/elth_cifar.py --workdir runs/elth --config.data.dir=~/data

About 5 full IMP runs of 16 trainings each plus the transfers and baselines: plan for GPU days, not hours.
Replicates: rerun with --config.seed=1 and --config.seed=2 in other workdirs, then `python -m elax.report`.
"""

from elax.config import default_config


def get_config():
    config = default_config()
    config.mode = "experiment"
    config.model.name = "cifar_resnet_20"
    config.experiment.source_model = "cifar_resnet_20"
    config.experiment.target_models = ("cifar_resnet_32", "cifar_resnet_56")
    config.experiment.baselines = ("reinit", "random", "magnitude", "snip", "grasp", "synflow")
    return config
