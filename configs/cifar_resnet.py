"""IMP with weight rewinding on CIFAR-10 ResNets, the E-LTH recipe (ELTH.md sections 1-2).

    python main.py --config configs/cifar_resnet.py --workdir runs/resnet20          # ResNet-20
    python main.py --config configs/cifar_resnet.py:56 --workdir runs/resnet56       # ResNet-56
"""

from elax.config import default_config


def get_config(depth: str = "20"):
    config = default_config()
    config.mode = "imp"
    config.model.name = f"cifar_resnet_{int(depth)}"
    config.data.name = "cifar10"
    return config
