"""ImageNet ResNet-18/26/34 (BasicBlock) and ResNet-50/101/152 (Bottleneck), in torchvision's shape (ResNet v1.5:
the Bottleneck's stride on its 3x3 conv). E-LTH's ImageNet experiments use 18/26/34 and 50; 101 and 152 give
ResNet-50 tickets deeper members of their own block type to move to.

stem 7x7/2 conv (no bias) - BN - ReLU - 3x3/2 max-pool; four stages of blocks with W, 2W, 4W, 8W channels (x4 at
the output of a Bottleneck); block 0 of a stage holds the downsampling 1x1 conv + BN when the stride or the channels
change; global average pool; dense `head`. Every conv (stem, stride-2 and downsampling ones included) and the
classifier are Kaiming-normal with fan_in, std sqrt(2 / fan_in): OpenLTH's `kaiming_normal`, which the official
E-LTH code applies over torchvision's fan_out init (the stem's scale differs 4.6x, that of convs that change the
channels sqrt(2) or 2x); `kernel_init=kaiming_fan_out` gives torchvision's convs. BN scale ~ U[0, 1), bias 0
(ELTH.md). Every conv kernel and the classifier kernel are prunable.

The two block types are two families (`imagenet_resnet`, `imagenet_resnet_bottleneck`): tickets move between
depths of one block type only.
"""

import functools
import re
from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp

from elax.models import family as registry
from elax.models import common

STAGES = {18: (2, 2, 2, 2), 26: (2, 3, 4, 3), 34: (3, 4, 6, 3),
          50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
BOTTLENECK_DEPTHS = (50, 101, 152)
kaiming_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")   # torchvision's convs


def _conv(features, kernel_size, strides=1, *, dtype, kernel_init, name):
    return nn.Conv(features, (kernel_size, kernel_size), strides=(strides, strides), padding=kernel_size // 2,
                   use_bias=False, kernel_init=kernel_init, dtype=dtype, name=name)


class _Block(nn.Module):
    """A residual block with `features` channels inside; the first of a downsampling stage has strides 2."""

    features: int
    strides: int = 1
    dtype: Any = jnp.float32
    kernel_init: Callable = common.kaiming_normal

    def layers(self, train: bool):
        """(conv, norm) constructors of this block's dtype and init."""
        return (functools.partial(_conv, dtype=self.dtype, kernel_init=self.kernel_init),
                functools.partial(common.batch_norm, train=train, dtype=self.dtype))


class BasicBlock(_Block):
    """conv3x3-BN-ReLU-conv3x3-BN + shortcut, ReLU."""

    @nn.compact
    def __call__(self, x, train: bool):
        conv, norm = self.layers(train)
        y = nn.relu(norm(name="bn1")(conv(self.features, 3, self.strides, name="conv1")(x)))
        y = norm(name="bn2")(conv(self.features, 3, name="conv2")(y))
        return nn.relu(y + _shortcut(x, self.features, self.strides, conv, norm))


class Bottleneck(_Block):
    """conv1x1-BN-ReLU-conv3x3(stride)-BN-ReLU-conv1x1(x4)-BN + shortcut, ReLU."""

    @nn.compact
    def __call__(self, x, train: bool):
        conv, norm = self.layers(train)
        y = nn.relu(norm(name="bn1")(conv(self.features, 1, name="conv1")(x)))
        y = nn.relu(norm(name="bn2")(conv(self.features, 3, self.strides, name="conv2")(y)))
        y = norm(name="bn3")(conv(self.features * 4, 1, name="conv3")(y))
        return nn.relu(y + _shortcut(x, self.features * 4, self.strides, conv, norm))


def _shortcut(x, features, strides, conv, norm):
    if strides == 1 and x.shape[-1] == features:
        return x
    return norm(name="downsample_bn")(conv(features, 1, strides, name="downsample_conv")(x))


class ImageNetResNet(nn.Module):
    """`stage_sizes` blocks per stage (Bottleneck blocks if `bottleneck`), base width `width`."""

    stage_sizes: tuple[int, ...]
    bottleneck: bool = False
    family: str = "imagenet_resnet"   # "imagenet_resnet_bottleneck" for Bottleneck depths (another family)
    width: int = 64
    num_classes: int = 1000
    dtype: Any = jnp.float32
    kernel_init: Callable = common.kaiming_normal   # of the convs; the classifier is always fan_in

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = _conv(self.width, 7, 2, dtype=self.dtype, kernel_init=self.kernel_init, name="stem_conv")(
            x.astype(self.dtype))
        x = nn.relu(common.batch_norm(train=train, dtype=self.dtype, name="stem_bn")(x))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        block = Bottleneck if self.bottleneck else BasicBlock
        for s, num_blocks in enumerate(self.stage_sizes, start=1):
            for b in range(num_blocks):
                strides = 2 if (s > 1 and b == 0) else 1
                x = block(self.width * 2 ** (s - 1), strides, self.dtype, self.kernel_init,
                          name=f"stage{s}_block{b}")(x, train)
        x = jnp.mean(x, axis=(1, 2))
        return common.dense(self.num_classes, dtype=self.dtype, name="head")(x).astype(jnp.float32)


def imagenet_resnet(depth: int, width: int = 64, **kwargs) -> ImageNetResNet:
    common.check_size("ImageNet ResNet", depth, STAGES, width)
    bottleneck = depth in BOTTLENECK_DEPTHS
    family = "imagenet_resnet_bottleneck" if bottleneck else "imagenet_resnet"
    return ImageNetResNet(STAGES[depth], bottleneck, family, width, **kwargs)


def _name_of(model: ImageNetResNet) -> str:
    depth = next(d for d, sizes in STAGES.items()
                 if sizes == tuple(model.stage_sizes) and (d in BOTTLENECK_DEPTHS) == model.bottleneck)
    return f"imagenet_resnet_{depth}" + ("" if model.width == 64 else f"_{model.width}")


def _family(name: str, depths: str, examples: tuple) -> registry.Family:
    return registry.register(registry.Family(
        name=name, pattern=f"imagenet_resnet_{{{depths}}}[_{{width}}]",
        regex=re.compile(rf"imagenet_resnet_({depths.replace(',', '|')})(?:_(\d+))?"),
        build=lambda depth, width, **kw: imagenet_resnet(int(depth), int(width or 64), **kw), name_of=_name_of,
        examples=examples, input_shape=(224, 224, 3), min_input_size=32,
        prune_exclude=(), pin_first_blocks=True,
        input_channels=lambda params: params["stem_conv"]["kernel"].shape[-2]))


BASIC = _family("imagenet_resnet", "18,26,34", ("imagenet_resnet_18", "imagenet_resnet_34_16"))
BOTTLENECK = _family("imagenet_resnet_bottleneck", "50,101,152", ("imagenet_resnet_50", "imagenet_resnet_101_32"))
