"""CIFAR ResNet-N (N = 6n + 2) of He et al. 2016, as used by OpenLTH and E-LTH.

stem 3x3 conv -> BN -> ReLU; three stages of n BasicBlocks with W, 2W, 4W channels; the first block of stages 2
and 3 downsamples with stride 2 and a 1x1 conv + BN shortcut ("option B"); global average pool; dense head.
Unit names (`stem_conv`, `stem_bn`, `stage{s}_block{b}`, `head`) are the family structure `elax.transfer` reads.
"""

import functools
import re
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from elax.models import family as registry
from elax.models import common


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU."""

    features: int
    strides: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        conv = functools.partial(common.conv, dtype=self.dtype)
        norm = functools.partial(common.batch_norm, train=train, dtype=self.dtype)
        y = conv(self.features, 3, self.strides, name="conv1")(x)
        y = nn.relu(norm(name="bn1")(y))
        y = conv(self.features, 3, 1, name="conv2")(y)
        y = norm(name="bn2")(y)
        if self.strides != 1 or x.shape[-1] != self.features:
            x = conv(self.features, 1, self.strides, name="shortcut_conv")(x)
            x = norm(name="shortcut_bn")(x)
        return nn.relu(y + x)


class CifarResNet(nn.Module):
    """CIFAR ResNet with `stage_sizes` blocks per stage and base width `width`."""

    stage_sizes: tuple[int, ...]
    width: int = 16
    num_classes: int = 10
    dtype: Any = jnp.float32
    family: str = "cifar_resnet"

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.astype(self.dtype)
        x = common.conv(self.width, 3, 1, dtype=self.dtype, name="stem_conv")(x)
        x = nn.relu(common.batch_norm(train=train, dtype=self.dtype, name="stem_bn")(x))
        for s, num_blocks in enumerate(self.stage_sizes, start=1):
            features = self.width * 2 ** (s - 1)
            for b in range(num_blocks):
                strides = 2 if (s > 1 and b == 0) else 1
                x = BasicBlock(features, strides, dtype=self.dtype, name=f"stage{s}_block{b}")(x, train)
        x = jnp.mean(x, axis=(1, 2))
        x = common.dense(self.num_classes, dtype=self.dtype, name="head")(x)
        return x.astype(jnp.float32)


MAX_BLOCKS = 200   # ResNet-1202, the deepest CIFAR ResNet of He et al. (2016); far deeper ones only exhaust memory


def depth_to_blocks(depth: int) -> int:
    """Blocks per stage of CIFAR ResNet-`depth`; raises for depths that are not 6n + 2 with 1 <= n <= 200."""
    if depth < 8 or (depth - 2) % 6 or depth > 6 * MAX_BLOCKS + 2:
        valid = ", ".join(str(6 * n + 2) for n in range(1, 10))
        raise ValueError(f"CIFAR ResNet depth must be 6n+2 with 1 <= n <= {MAX_BLOCKS} ({valid}, ..., "
                         f"{6 * MAX_BLOCKS + 2}), got {depth}.")
    return (depth - 2) // 6


def cifar_resnet(depth: int, width: int = 16, **kwargs) -> CifarResNet:
    n = depth_to_blocks(depth)
    common.check_size("CIFAR ResNet", depth, None, width)
    return CifarResNet(stage_sizes=(n, n, n), width=width, **kwargs)


def _name_of(model: CifarResNet) -> str:
    depth = 6 * model.stage_sizes[0] + 2
    return f"cifar_resnet_{depth}" + ("" if model.width == 16 else f"_{model.width}")


FAMILY = registry.register(registry.Family(
    name="cifar_resnet", pattern="cifar_resnet_{depth}[_{width}]",
    regex=re.compile(r"cifar_resnet_(\d+)(?:_(\d+))?"),
    build=lambda depth, width, **kw: cifar_resnet(int(depth), int(width or 16), **kw),
    name_of=_name_of, examples=("cifar_resnet_20", "cifar_resnet_56", "cifar_resnet_20_64"),
    input_shape=(32, 32, 3), prune_exclude=(), pin_first_blocks=True,
    input_channels=lambda params: params["stem_conv"]["kernel"].shape[-2]))
