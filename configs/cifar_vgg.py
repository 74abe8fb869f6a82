"""IMP with weight rewinding on CIFAR-10 VGGs (OpenLTH / E-LTH): the CIFAR recipe (ELTH.md section 2), rewind to
iteration 200, the classifier never pruned (the family declares it).

    python main.py --config configs/cifar_vgg.py --workdir runs/vgg16          # VGG-16
    python main.py --config configs/cifar_vgg.py:19 --workdir runs/vgg19       # VGG-19 (11, 13, 16, 19)
"""

from elax.config import default_config


def get_config(depth: str = "16"):
    config = default_config()
    config.mode = "imp"
    config.model.name = f"cifar_vgg_{int(depth)}"
    config.data.name = "cifar10"
    config.lottery.rewind_steps = 200   # r for VGGs (ELTH.md section 1)
    return config
