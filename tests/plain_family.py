"""A tiny model family without BatchNorm, registered by the tests: a model whose only variables are its params
(as a ViT's or an MLP's) plugs into IMP, transfer and the baselines through one module and one register call.

`plain_{n1}-{n2}-...[_w{w1}-{w2}-...]`: the flattened image, then stages of n_s blocks; a block is LayerNorm,
Dense(w_s) and ReLU, with a residual connection when its input has w_s features; then a dense head. Stage widths
default to 32, 64, ...: block 0 of a stage changes the width, the others keep it, so which blocks are fixed for
transfer follows from shapes.
"""

import re

import flax.linen as nn
import jax.numpy as jnp

from elax import models
from elax.models import common


class PlainBlock(nn.Module):
    features: int
    dtype: object = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        y = nn.LayerNorm(dtype=self.dtype, name="norm")(x)
        y = nn.relu(common.dense(self.features, dtype=self.dtype, name="dense")(y))
        return x + y if x.shape[-1] == self.features else y


class PlainNet(nn.Module):
    stage_sizes: tuple
    widths: tuple
    family: str = "plain"
    num_classes: int = 10
    dtype: object = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = jnp.asarray(x, self.dtype).reshape(x.shape[0], -1)
        for s, (n, width) in enumerate(zip(self.stage_sizes, self.widths), start=1):
            for b in range(n):
                x = PlainBlock(width, self.dtype, name=f"stage{s}_block{b}")(x, train)
        return common.dense(self.num_classes, dtype=self.dtype, name="head")(x).astype(jnp.float32)


def _default_widths(stages: int) -> tuple:
    return tuple(32 * 2**s for s in range(stages))


def _build(sizes, widths, **kwargs):
    sizes = tuple(int(n) for n in sizes.split("-"))
    widths = tuple(int(w) for w in widths.split("-")) if widths else _default_widths(len(sizes))
    if len(widths) != len(sizes):
        raise ValueError(f"plain model: {len(sizes)} stages but {len(widths)} widths")
    return PlainNet(stage_sizes=sizes, widths=widths, **kwargs)


def _name_of(model):
    name = "plain_" + "-".join(map(str, model.stage_sizes))
    return name + ("" if model.widths == _default_widths(len(model.stage_sizes))
                   else "_w" + "-".join(map(str, model.widths)))


FAMILY = models.register(models.Family(
    name="plain", pattern="plain_{n1}-{n2}-...[_w{w1}-{w2}-...]", regex=re.compile(r"plain_([\d-]+)(?:_w([\d-]+))?"),
    build=_build, name_of=_name_of, examples=("plain_2-3",), input_shape=(4, 4, 3), prune_exclude=("head",),
    # Traced on 4x4 images: a flattened input of F features has F / 16 channels there.
    input_channels=lambda params: params["stage1_block0"]["dense"]["kernel"].shape[0] // 16))
