"""A tiny model family registered by the tests: how a new family plugs into elax (one module, one register call).

`toy_{n1}-{n2}-...[_w{w1}-{w2}-...]`: stages of n_s blocks; a block is Dense(w_s) + BatchNorm + ReLU over the
channels of every pixel, then a mean over pixels and a dense head. Stage widths default to 4, 8, 16, ...; block 0
of a stage changes the width unless the previous stage (or the 3 input channels) has the same one, so which
blocks are fixed for transfer follows from shapes alone (the family pins nothing).
"""

import re

import flax.linen as nn
import jax.numpy as jnp

from elax import models
from elax.models import common


class ToyBlock(nn.Module):
    features: int
    dtype: object = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        x = common.dense(self.features, dtype=self.dtype, name="dense")(x)
        return nn.relu(common.batch_norm(train=train, dtype=self.dtype, name="bn")(x))


class ToyNet(nn.Module):
    stage_sizes: tuple   # blocks per stage
    widths: tuple        # features per stage
    family: str = "toy"  # the registry key of the family (elax.models.family_of reads it)
    num_classes: int = 10
    dtype: object = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = jnp.asarray(x, self.dtype)
        for s, (n, width) in enumerate(zip(self.stage_sizes, self.widths), start=1):
            for b in range(n):
                x = ToyBlock(width, self.dtype, name=f"stage{s}_block{b}")(x, train)
        x = jnp.mean(x, axis=(1, 2))
        return common.dense(self.num_classes, dtype=self.dtype, name="head")(x).astype(jnp.float32)


def _build(sizes, widths, **kwargs):
    sizes = tuple(int(n) for n in sizes.split("-"))
    widths = tuple(int(w) for w in widths.split("-")) if widths else tuple(4 * 2**s for s in range(len(sizes)))
    if len(widths) != len(sizes):
        raise ValueError(f"toy model: {len(sizes)} stages but {len(widths)} widths")
    return ToyNet(stage_sizes=sizes, widths=widths, **kwargs)


def _name_of(model):
    name = "toy_" + "-".join(map(str, model.stage_sizes))
    default = tuple(4 * 2**s for s in range(len(model.stage_sizes)))
    return name + ("" if model.widths == default else "_w" + "-".join(map(str, model.widths)))


FAMILY = models.register(models.Family(
    name="toy", pattern="toy_{n1}-{n2}-...[_w{w1}-{w2}-...]", regex=re.compile(r"toy_([\d-]+)(?:_w([\d-]+))?"),
    build=_build, name_of=_name_of, examples=("toy_2-3",), input_shape=(4, 4, 3),
    prune_exclude=("head",), input_channels=lambda params: params["stage1_block0"]["dense"]["kernel"].shape[0]))
