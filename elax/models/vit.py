"""Vision Transformers (Dosovitskiy et al. 2021) for elastic tickets: one stage of identical encoder blocks, so every
block is free for transfer (the paper's append / interpolate / drop_last / interleave apply to all of them).

Names: `vit_{depth}_{dim}_p{patch}[_h{heads}][_gap]`, e.g. `vit_6_64_p4`: `depth` pre-LayerNorm encoder blocks of
width `dim` (multi-head self-attention, then an MLP of 4 x dim with GELU, each in a residual), `patch` x `patch`
patches embedded by a linear map (a strided conv), a learned position embedding, `heads` attention heads (default
dim // 32, at least 1), and a class token read by the head, or with `_gap` the mean of the patch tokens. A final
LayerNorm precedes the dense head. Any image whose sides the patch divides; the position embedding follows the
image size the model is built on.

Pruned (`prune_exclude`): the kernels of attention (query, key, value, out) and of the MLPs, as in the
lottery-ticket work on ViTs (Chen et al. 2021). The patch embedding and the head are kept dense, as sparse-training
work keeps a network's first and last layers (they hold ~1% of a small ViT's weights); LayerNorms, biases, the
position embedding and the class token are never pruned (they are not kernels).

Init as Big Vision's ViT: Xavier-uniform kernels, zero biases (MLP biases ~ N(0, 1e-6)), position embedding
~ N(0, 0.02), class token and head zero.
"""

import math
import re
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from elax.models import family as registry

MLP_RATIO = 4
_xavier = nn.initializers.xavier_uniform()


class EncoderBlock(nn.Module):
    """x + MHSA(LN(x)), then x + MLP(LN(x))."""

    dim: int
    heads: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        y = nn.LayerNorm(dtype=self.dtype, name="norm1")(x)
        y = nn.MultiHeadDotProductAttention(num_heads=self.heads, dtype=self.dtype, kernel_init=_xavier,
                                            deterministic=True, name="attention")(y, y)
        x = x + y
        y = nn.LayerNorm(dtype=self.dtype, name="norm2")(x)
        y = nn.Dense(MLP_RATIO * self.dim, dtype=self.dtype, kernel_init=_xavier,
                     bias_init=nn.initializers.normal(1e-6), name="mlp1")(y)
        y = nn.Dense(self.dim, dtype=self.dtype, kernel_init=_xavier, bias_init=nn.initializers.normal(1e-6),
                     name="mlp2")(nn.gelu(y))
        return x + y


class ViT(nn.Module):
    depth: int
    dim: int
    patch: int
    heads: int
    pool: str = "token"          # "token": a class token; "mean": the mean of the patch tokens
    num_classes: int = 10
    dtype: Any = jnp.float32
    family: str = "vit"

    @property
    def stage_sizes(self) -> tuple[int, ...]:
        return (self.depth,)

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(self.dim, (self.patch, self.patch), strides=(self.patch, self.patch), padding="VALID",
                    kernel_init=_xavier, dtype=self.dtype, name="patch_embed")(x.astype(self.dtype))
        x = x.reshape(x.shape[0], -1, self.dim)
        if self.pool == "token":
            token = self.param("cls_token", nn.initializers.zeros, (1, 1, self.dim))
            x = jnp.concatenate([jnp.tile(token, (x.shape[0], 1, 1)).astype(x.dtype), x], axis=1)
        position = self.param("pos_embedding", nn.initializers.normal(0.02), (1, x.shape[1], self.dim))
        x = x + position.astype(x.dtype)
        for b in range(self.depth):
            x = EncoderBlock(self.dim, self.heads, self.dtype, name=f"stage1_block{b}")(x, train)
        x = nn.LayerNorm(dtype=self.dtype, name="norm")(x)
        x = x[:, 0] if self.pool == "token" else jnp.mean(x, axis=1)
        x = nn.Dense(self.num_classes, dtype=self.dtype, kernel_init=nn.initializers.zeros, name="head")(x)
        return x.astype(jnp.float32)


def vit(depth: int, dim: int, patch: int, heads: int | None = None, pool: str = "token", **kwargs) -> ViT:
    heads = heads or max(1, dim // 32)
    if depth < 1 or dim < 1 or patch < 1:
        raise ValueError(f"ViT depth, width and patch must be >= 1, got {depth}, {dim}, {patch}.")
    if dim % heads:
        raise ValueError(f"ViT width {dim} is not divisible by its {heads} heads.")
    return ViT(depth, dim, patch, heads, pool, **kwargs)


def _name_of(model: ViT) -> str:
    heads = "" if model.heads == max(1, model.dim // 32) else f"_h{model.heads}"
    return f"vit_{model.depth}_{model.dim}_p{model.patch}{heads}{'_gap' if model.pool == 'mean' else ''}"


def _input_shape_of(params) -> tuple[int, int, int]:
    """The (square) image shape that `params` were built for, from the patch embedding and position embedding."""
    patch, _, channels, _ = params["patch_embed"]["kernel"].shape
    tokens = params["pos_embedding"].shape[1] - (1 if "cls_token" in params else 0)
    side = math.isqrt(tokens) * patch
    return side, side, channels


def _input_problem(model: ViT, image_shape) -> str | None:
    height, width = image_shape[:2]
    if height % model.patch or width % model.patch:
        return (f"{_name_of(model)} cuts images into {model.patch}x{model.patch} patches, which do not tile "
                f"{height}x{width} images")
    return None


FAMILY = registry.register(registry.Family(
    name="vit", pattern="vit_{depth}_{dim}_p{patch}[_h{heads}][_gap]",
    regex=re.compile(r"vit_(\d+)_(\d+)_p(\d+)(?:_h(\d+))?(_gap)?"),
    build=lambda depth, dim, patch, heads, gap, **kw: vit(int(depth), int(dim), int(patch),
                                                          int(heads) if heads else None,
                                                          "mean" if gap else "token", **kw),
    name_of=_name_of, examples=("vit_6_64_p4", "vit_4_64_p4_gap"), input_shape=(32, 32, 3),
    prune_exclude=("patch_embed", "head"), input_shape_from=_input_shape_of, input_problem=_input_problem))
