"""Multilayer perceptrons: the lottery ticket's first model, LeNet-300-100 (Frankle & Carbin 2019), and MLPs of
equal hidden layers that elastic transfer may deepen or shorten.

Names: `mlp_{w1}_{w2}_..._{wk}` (hidden widths, e.g. `mlp_300_100`), or `mlp_{depth}x{width}` for `depth` equal
hidden layers (`mlp_4x256`; `mlp_256_256` is the same model, named back `mlp_2x256`). The image is flattened; each
hidden layer is a unit `stage1_block{b}` (Dense + ReLU), then a dense `head`. One stage: block 0 maps the image to
the first width and is fixed by its shapes; the others are free when their widths are equal.

Every kernel is pruned, the head's too (Frankle & Carbin prune the output layer at half the hidden layers' rate:
`lottery.layer_fractions`). Init: Glorot-normal kernels (their "Gaussian Glorot"), zero biases.
"""

import re
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from elax.models import family as registry

_glorot = nn.initializers.xavier_normal()


class Hidden(nn.Module):
    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        return nn.relu(nn.Dense(self.features, dtype=self.dtype, kernel_init=_glorot, name="dense")(x))


class MLP(nn.Module):
    widths: tuple
    num_classes: int = 10
    dtype: Any = jnp.float32
    family: str = "mlp"

    @property
    def stage_sizes(self) -> tuple[int, ...]:
        return (len(self.widths),)

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.astype(self.dtype).reshape(x.shape[0], -1)
        for b, width in enumerate(self.widths):
            x = Hidden(width, self.dtype, name=f"stage1_block{b}")(x, train)
        x = nn.Dense(self.num_classes, dtype=self.dtype, kernel_init=_glorot, name="head")(x)
        return x.astype(jnp.float32)


def mlp(spec: str, **kwargs) -> MLP:
    """The MLP of a name's spec: '300_100' (widths) or '4x256' (depth x width)."""
    depth, x, width = spec.partition("x")
    widths = (int(width),) * int(depth) if x else tuple(int(w) for w in spec.split("_"))
    if not widths or min(widths) < 1:
        raise ValueError(f"MLP widths must be >= 1 and there must be at least one hidden layer, got {spec!r}.")
    return MLP(widths, **kwargs)


def _name_of(model: MLP) -> str:
    widths = model.widths
    if len(widths) > 1 and len(set(widths)) == 1:
        return f"mlp_{len(widths)}x{widths[0]}"
    return "mlp_" + "_".join(map(str, widths))


FAMILY = registry.register(registry.Family(
    name="mlp", pattern="mlp_{w1}_{w2}_... | mlp_{depth}x{width}", regex=re.compile(r"mlp_(\d+x\d+|\d+(?:_\d+)*)"),
    build=lambda spec, **kw: mlp(spec, **kw), name_of=_name_of, examples=("mlp_300_100", "mlp_4x256"),
    input_shape=(28, 28, 1), prune_exclude=(),
    input_shape_from=lambda params: (params["stage1_block0"]["dense"]["kernel"].shape[0], 1, 1)))
