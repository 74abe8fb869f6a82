"""Model families and the registry of model names ("cifar_resnet_20", "cifar_resnet_56_32") -> Flax modules.

`elax.models.family` holds the family protocol (what a family declares, what its modules must have) and the
registry; each built-in family is one module that registers itself: CIFAR ResNets, CIFAR VGGs, ImageNet ResNets
(BasicBlock and Bottleneck). A family of your own is one module and one `register(Family(...))` call (see
docs/ or tests/toy_family.py).
"""

from elax.models import cifar_resnet, cifar_vgg, imagenet_resnet, mlp, vit  # noqa: F401  (each registers its family)
from elax.models.family import (BLOCK_NAME, FAMILIES, Family, block_shapes, check_model, family_of, fixed_blocks,
                                get, get_model, init_variables, model_name, names, register, split_variables,
                                stage_sizes, variable_shapes)

__all__ = ["BLOCK_NAME", "FAMILIES", "Family", "block_shapes", "check_model", "family_of", "fixed_blocks", "get",
           "get_model", "init_variables", "model_name", "names", "register", "split_variables", "stage_sizes",
           "variable_shapes"]
