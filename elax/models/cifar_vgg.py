"""CIFAR VGG-11/13/16/19 as in OpenLTH and E-LTH: conv3x3 (with bias) - BN - ReLU units in five stages split by 2x2
max-pools, then a 2x2 average pool and a dense classifier (`head`, never pruned: OpenLTH's
`pruning_layers_to_ignore='fc.weight'`).

Each conv unit is a block `stage{s}_block{b}` for elastic transfer. The first conv of a stage that changes the
channels is fixed (it maps only to itself); the last stage (512 -> 512) keeps its channels, so all its convs are
free and its first conv may be replicated too.
"""

import re
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from elax.models import family as registry
from elax.models import common

# Channels of the convs of each stage, for width 64 (the paper's VGGs).
PLANS = {
    11: ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    13: ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    16: ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    19: ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512, 512, 512)),
}


class ConvUnit(nn.Module):
    """conv3x3 (with bias) - BN - ReLU."""

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        x = common.conv(self.features, 3, 1, use_bias=True, dtype=self.dtype, name="conv")(x)
        return nn.relu(common.batch_norm(train=train, dtype=self.dtype, name="bn")(x))


class CifarVGG(nn.Module):
    """VGG with `stage_channels[s][b]` channels in conv b of stage s; a 2x2 max-pool before stages 2..5."""

    stage_channels: tuple
    width: int = 64
    num_classes: int = 10
    dtype: Any = jnp.float32
    family: str = "cifar_vgg"

    @property
    def stage_sizes(self) -> tuple[int, ...]:
        return tuple(len(c) for c in self.stage_channels)

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.astype(self.dtype)
        for s, channels in enumerate(self.stage_channels, start=1):
            if s > 1:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
            for b, features in enumerate(channels):
                x = ConvUnit(features, self.dtype, name=f"stage{s}_block{b}")(x, train)
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))
        return common.dense(self.num_classes, dtype=self.dtype, name="head")(x).astype(jnp.float32)


def cifar_vgg(depth: int, width: int = 64, **kwargs) -> CifarVGG:
    common.check_size("CIFAR VGG", depth, PLANS, width)
    channels = tuple(tuple(c * width // 64 for c in stage) for stage in PLANS[depth])
    return CifarVGG(stage_channels=channels, width=width, **kwargs)


def _name_of(model: CifarVGG) -> str:
    depth = next(d for d, plan in PLANS.items() if tuple(len(s) for s in plan) == model.stage_sizes)
    return f"cifar_vgg_{depth}" + ("" if model.width == 64 else f"_{model.width}")


FAMILY = registry.register(registry.Family(
    name="cifar_vgg", pattern="cifar_vgg_{11,13,16,19}[_{width}]", regex=re.compile(r"cifar_vgg_(\d+)(?:_(\d+))?"),
    build=lambda depth, width, **kw: cifar_vgg(int(depth), int(width or 64), **kw), name_of=_name_of,
    examples=("cifar_vgg_16", "cifar_vgg_11_8"), input_shape=(32, 32, 3), min_input_size=32,
    prune_exclude=("head",), pin_first_blocks=False,
    input_channels=lambda params: params["stage1_block0"]["conv"]["kernel"].shape[-2]))
