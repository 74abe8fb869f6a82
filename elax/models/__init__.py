"""Model families and the registry of model names ("cifar_resnet_20", "cifar_resnet_56_32") -> Flax modules.

`elax.models.family` holds the family protocol (what a family declares, what its modules must have) and the
registry; each built-in family is one module that registers itself: CIFAR ResNets, CIFAR VGGs, ImageNet ResNets
(BasicBlock and Bottleneck), Vision Transformers and MLPs. A family of your own is one module and one
`register(Family(...))` call (docs/bring_your_own_model.md; tests/toy_family.py).
"""

from elax.models import cifar_resnet, cifar_vgg, imagenet_resnet, mlp, vit  # noqa: F401  (each registers its family)
from elax.models.family import (BLOCK_NAME, FAMILIES, Family, block_shapes, check_model, family_of, fixed_blocks,
                                get_model, init_variables, model_name, register, split_variables, stage_sizes,
                                variable_shapes, variables_mismatch)

__all__ = ["BLOCK_NAME", "FAMILIES", "Family", "block_shapes", "check_model", "family_of", "fixed_blocks",
           "get_model", "init_variables", "model_name", "register", "split_variables", "stage_sizes",
           "variable_shapes", "variables_mismatch"]
