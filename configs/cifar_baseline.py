"""A pruning baseline on CIFAR-10 at the sparsities of an IMP run of the same model.

    python main.py --config configs/cifar_baseline.py --config.baseline.method=snip \
        --config.baseline.reference=runs/resnet56 --config.model.name=cifar_resnet_56 --workdir runs/snip_56
"""

from elax.config import default_config


def get_config(method: str = "random"):
    config = default_config()
    config.mode = "baseline"
    config.baseline.method = method
    config.baseline.reference = ""       # required: the IMP run whose levels set the sparsities
    return config
