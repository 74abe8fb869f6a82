"""Elastic ticket transformation for any family: train the transferred tickets of a source IMP run on another depth
of its family. The recipe (`data` and `train`) is the source run's, taken from its config.json, so this file sets
only what a transfer adds: the target model and the source run (both required).

    python main.py --config configs/transfer.py --config.transfer.source=runs/r26 \
        --config.model.name=imagenet_resnet_34 --workdir runs/ett_26_to_34
"""

from elax.config import default_config


def get_config():
    config = default_config()
    config.mode = "transfer"
    config.model.name = ""               # required: the target model, e.g. imagenet_resnet_34 or cifar_resnet_56
    config.transfer.source = ""          # required: the source run's workdir
    config.transfer.strategy = "append"
    return config
