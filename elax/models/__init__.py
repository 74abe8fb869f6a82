"""Model registry: a name such as "cifar_resnet_20" or "cifar_resnet_56_32" -> a Flax linen module.

Every model has `family`, `stage_sizes` and `width` attributes and units named `stage{s}_block{b}`,
which is all `elax.transfer` needs to map tickets between depths.
"""

import functools
import re
from typing import Any

import jax
import jax.numpy as jnp

from elax.models.cifar_resnet import CifarResNet, cifar_resnet

_PATTERNS = {
    # name -> (regex, builder from the regex groups)
    "cifar_resnet_{depth}[_{width}]": (
        re.compile(r"cifar_resnet_(\d+)(?:_(\d+))?"),
        lambda depth, width, **kw: cifar_resnet(int(depth), int(width or 16), **kw),
    ),
}


def get_model(name: str, num_classes: int = 10, dtype: Any = jnp.float32):
    """The Flax module registered under `name`; raises ValueError listing valid names."""
    for regex, build in _PATTERNS.values():
        match = regex.fullmatch(name)
        if match:
            return build(*match.groups(), num_classes=num_classes, dtype=dtype)
    raise ValueError(
        f"Unknown model {name!r}. Valid names: {', '.join(_PATTERNS)} "
        "(e.g. cifar_resnet_20, cifar_resnet_56, cifar_resnet_20_64)."
    )


def model_name(model) -> str:
    """Inverse of `get_model` for registry models (used to record which model a ticket belongs to)."""
    if isinstance(model, CifarResNet):
        depth = 6 * model.stage_sizes[0] + 2
        return f"cifar_resnet_{depth}" + ("" if model.width == 16 else f"_{model.width}")
    raise ValueError(f"Not a registry model: {type(model).__name__}")


def init_variables(model, key, input_shape):
    """Initial {'params', 'batch_stats'} of `model` for images of `input_shape` (H, W, C)."""
    return _jitted_init(model, tuple(input_shape))(key)


@functools.lru_cache(maxsize=32)
def _jitted_init(model, input_shape):
    # One compilation per (model, input shape), however many seeds are initialised.
    dummy = jnp.zeros((1, *input_shape), jnp.float32)
    return jax.jit(lambda key: model.init(key, dummy, train=False))


__all__ = ["CifarResNet", "cifar_resnet", "get_model", "init_variables", "model_name"]
