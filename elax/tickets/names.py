"""elax's variable paths and the PyTorch reference implementations' parameter names, family by family.

    cifar_resnet (OpenLTH models/cifar_resnet.py)     imagenet_resnet[_bottleneck] (torchvision's ResNet)
      stem_conv, stem_bn      -> conv, bn                stem_conv, stem_bn    -> conv1, bn1
      stage{s}_block{b}/X     -> blocks.{i}.X            stage{s}_block{b}/X   -> layer{s}.{b}.X
        shortcut_conv/_bn     -> shortcut.0 / .1           downsample_conv/_bn -> downsample.0 / .1
      head                    -> fc                      head                  -> fc
    cifar_vgg (OpenLTH models/cifar_vgg.py: `layers` holds the max-pools too, so i counts them)
      stage{s}_block{b}/conv, bn -> layers.{i}.conv, .bn;  head -> fc

i counts blocks (convs) from 0 across stages. Leaves: kernel -> weight, bias -> bias, BatchNorm scale -> weight,
mean -> running_mean, var -> running_var (plus PyTorch's num_batches_tracked, which elax does not keep). A family of
your own registers a function `module_name(model, path) -> str` in `TORCH_NAMES`.
"""

from elax import models
from elax.registry import Registry
from elax.tickets.flat import SEP, leaf_names

# elax leaf name -> PyTorch's, by collection.
LEAF_NAMES = {"params": {"kernel": "weight", "bias": "bias", "scale": "weight"},
              "batch_stats": {"mean": "running_mean", "var": "running_var"}}

TORCH_NAMES: Registry = Registry("PyTorch naming")


def _block_index(model, s: int, b: int) -> int:
    return sum(models.stage_sizes(model)[:s - 1]) + b


def _cifar_resnet(model, path: tuple) -> str:
    renamed = {"stem_conv": "conv", "stem_bn": "bn", "head": "fc", "shortcut_conv": "shortcut.0",
               "shortcut_bn": "shortcut.1"}
    match = models.BLOCK_NAME.fullmatch(path[0])
    if match:
        return ".".join(["blocks", str(_block_index(model, int(match[1]), int(match[2])))]
                        + [renamed.get(p, p) for p in path[1:]])
    return ".".join(renamed.get(p, p) for p in path)


def _cifar_vgg(model, path: tuple) -> str:
    match = models.BLOCK_NAME.fullmatch(path[0])
    if match:   # OpenLTH's `layers` Sequential holds a MaxPool2d before stages 2..5
        s = int(match[1])
        return ".".join(["layers", str(_block_index(model, s, int(match[2])) + s - 1), *path[1:]])
    return {"head": "fc"}.get(path[0], path[0])


def _imagenet_resnet(model, path: tuple) -> str:
    renamed = {"stem_conv": "conv1", "stem_bn": "bn1", "head": "fc", "downsample_conv": "downsample.0",
               "downsample_bn": "downsample.1"}
    match = models.BLOCK_NAME.fullmatch(path[0])
    if match:
        return ".".join([f"layer{match[1]}", match[2]] + [renamed.get(p, p) for p in path[1:]])
    return ".".join(renamed.get(p, p) for p in path)


TORCH_NAMES.register("cifar_resnet", _cifar_resnet)
TORCH_NAMES.register("cifar_vgg", _cifar_vgg)
TORCH_NAMES.register("imagenet_resnet", _imagenet_resnet)
TORCH_NAMES.register("imagenet_resnet_bottleneck", _imagenet_resnet)


def reference(model) -> str:
    """What the names follow, for messages and file metadata."""
    family = models.family_of(model).name
    return "torchvision's ResNet" if family.startswith("imagenet_resnet") else f"OpenLTH's {family}"


def name_table(model) -> dict[str, str]:
    """{'params/stem_conv/kernel': 'conv.weight', 'batch_stats/stem_bn/mean': 'bn.running_mean', ...} of every
    variable of `model` (a module or registry name). UnknownName for a family without PyTorch names."""
    model = models.get_model(model) if isinstance(model, str) else model
    family = models.family_of(model)
    module_name = TORCH_NAMES.get(family.name)
    shapes = models.variable_shapes(model, family.input_shape)   # traced, not run
    table = {}
    for collection in ("params", "batch_stats"):
        for name in leaf_names(shapes.get(collection, {}), collection):
            *path, leaf = name.split(SEP)[1:]
            table[name] = f"{module_name(model, tuple(path))}.{LEAF_NAMES[collection][leaf]}"
    return table


def batch_norm_modules(table: dict) -> list[str]:
    """The PyTorch names of the BatchNorm modules of a `name_table` (each has a num_batches_tracked)."""
    return sorted({torch_name.rsplit(".", 1)[0] for name, torch_name in table.items()
                   if name.startswith("batch_stats" + SEP)})

