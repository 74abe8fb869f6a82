"""Elastic ticket transformation on CIFAR-10: train the transferred tickets of a source IMP run on a target depth.

    python main.py --config configs/cifar_transfer.py --config.transfer.source=runs/resnet20 \
        --config.model.name=cifar_resnet_56 --workdir runs/ett_20_to_56
"""

from elax.config import default_config


def get_config(target: str = "56"):
    config = default_config()
    config.mode = "transfer"
    config.model.name = f"cifar_resnet_{int(target)}"
    config.transfer.source = ""          # required: the source run's workdir
    config.transfer.strategy = "append"
    return config
