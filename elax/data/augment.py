"""On-device augmentation and normalisation: pure jax, jit-able, seeded by the caller."""

import jax
import jax.numpy as jnp

def random_crop(images: jax.Array, key: jax.Array, pad: int = 4) -> jax.Array:
    """Zero-pads [B, H, W, C] by `pad` and takes an independent random HxW crop per example."""
    b, h, w, c = images.shape
    padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    offsets = jax.random.randint(key, (b, 2), 0, 2 * pad + 1)

    def crop(image, offset):
        return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (h, w, c))

    return jax.vmap(crop)(padded, offsets)


def random_flip(images: jax.Array, key: jax.Array) -> jax.Array:
    """Flips each example of [B, H, W, C] horizontally with probability 1/2."""
    flip = jax.random.bernoulli(key, 0.5, (images.shape[0],))
    return jnp.where(flip[:, None, None, None], images[:, :, ::-1], images)


def random_crop_flip(images: jax.Array, key: jax.Array, pad: int = 4) -> jax.Array:
    """Standard CIFAR augmentation: per-example random padded crop, then random h-flip."""
    crop_key, flip_key = jax.random.split(key)
    return random_flip(random_crop(images, crop_key, pad), flip_key)


def normalize(images: jax.Array, mean, std, dtype=jnp.float32) -> jax.Array:
    """(images / 255 - mean) / std over the channel axis, computed in f32 then cast."""
    x = images.astype(jnp.float32) / 255.0
    mean = jnp.asarray(mean, jnp.float32)
    std = jnp.asarray(std, jnp.float32)
    return ((x - mean) / std).astype(dtype)
