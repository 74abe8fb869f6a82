"""Layers shared by the model families, with the OpenLTH / E-LTH initialisation.

Conv and dense kernels: Kaiming-normal (fan_in, untruncated), as `torch.nn.init.kaiming_normal_`.
BatchNorm: scale ~ U[0, 1), bias 0, PyTorch's momentum 0.1 (Flax's 0.9) and eps 1e-5. One difference remains:
Flax updates the running variance with the batch's biased variance, PyTorch with the unbiased one (n/(n-1) times
larger for n values per channel: 1.14 at n = 8, 1 + 2e-5 at ImageNet's batch sizes); kept, as changing it would
change the results of existing runs.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

kaiming_normal = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


def uniform_01(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype)


def conv(features, kernel_size, strides=1, *, use_bias=False, dtype=jnp.float32, name=None):
    return nn.Conv(
        features, (kernel_size, kernel_size), strides=(strides, strides), padding=kernel_size // 2,
        use_bias=use_bias, kernel_init=kaiming_normal, dtype=dtype, name=name,
    )


def batch_norm(*, train, dtype=jnp.float32, name=None):
    return nn.BatchNorm(
        use_running_average=not train, momentum=0.9, epsilon=1e-5, scale_init=uniform_01,
        dtype=dtype, name=name,
    )


def dense(features, *, dtype=jnp.float32, name=None):
    return nn.Dense(features, kernel_init=kaiming_normal, dtype=dtype, name=name)


def check_size(kind: str, depth: int, depths, width: int) -> None:
    """ValueError naming the valid depths (if `depths` is given) or a width below 1."""
    if depths is not None and depth not in depths:
        raise ValueError(f"{kind} depth must be one of {', '.join(map(str, depths))}, got {depth}.")
    if width < 1:
        raise ValueError(f"{kind} width must be >= 1 (channels of the first layer), got {width}.")
