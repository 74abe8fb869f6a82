"""Analytic floors for benchmarks/throughput.py: FLOPs and conv outputs per image, the input path's bytes, the
device's measured matmul and copy rates, the images/s those bound, and XLA's own cost count of a program."""

import math
import statistics
import time

import flax
import jax
import jax.numpy as jnp

CIFAR_SHAPE = (32, 32, 3)


def model_costs(model, image_shape=CIFAR_SHAPE) -> dict:
    """Conv/dense multiply-accumulates (with attention's projections and products) and conv-output elements per
    image, counted over the layers a traced (not run) forward pass calls: any family."""
    macs = acts = 0

    def count(next_fun, args, kwargs, context):
        nonlocal macs, acts
        out = next_fun(*args, **kwargs)
        layer = context.module
        if context.method_name != "__call__":
            return out
        if isinstance(layer, (flax.linen.Conv, flax.linen.Dense)):
            outputs = math.prod(out.shape[1:])
            macs += outputs * math.prod(getattr(layer, "kernel_size", ())) * args[0].shape[-1]
            acts += outputs if isinstance(layer, flax.linen.Conv) else 0
        elif isinstance(layer, flax.linen.DenseGeneral):   # attention's projections: positions x kernel size
            contracted = len(layer.axis) if isinstance(layer.axis, tuple) else 1
            positions = math.prod(args[0].shape[1:-contracted])
            macs += math.prod(out.shape[1:]) * math.prod(args[0].shape[1:]) // positions
        elif isinstance(layer, flax.linen.MultiHeadDotProductAttention):   # Q K^T and (softmax) V
            tokens, width = args[0].shape[-2], layer.qkv_features or args[0].shape[-1]
            macs += 2 * tokens * tokens * width
        return out

    with flax.linen.intercept_methods(count):
        jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, *image_shape)), train=False))
    forward = 2 * macs
    return {"macs_per_image": macs, "forward_flops_per_image": forward,
            # Backward = grads w.r.t. inputs + w.r.t. weights, each about one forward.
            "train_flops_per_image": 3 * forward, "conv_output_elements_per_image": acts}


def input_bytes_per_image(image_shape=CIFAR_SHAPE, pad=4, dtype_bytes=4) -> dict:
    """Bytes per image moved by the in-jit input path if every stage were materialised (no fusion)."""
    h, w, c = image_shape
    raw, padded = h * w * c, (h + 2 * pad) * (w + 2 * pad) * c
    stages = {"gather": 2 * raw, "pad": raw + padded, "crop": padded + raw, "flip": 2 * raw,
              "normalize": raw + raw * dtype_bytes}
    # Fully fused, the path reads the uint8 image once and writes the normalised one once.
    return {**stages, "unfused_total": sum(stages.values()), "fused_minimum": raw + raw * dtype_bytes}


def device_rates(matmul_size: int, copy_mib: int, repeats: int = 5) -> dict:
    """Measured peak-ish rates of the device: square matmul FLOP/s (fp32 at JAX's default precision, which is TF32
    on recent NVIDIA GPUs, and bf16) and copy bandwidth (read + write of a `copy_mib` MiB fp32 array)."""
    def rate(fn, x, work):
        fn = jax.jit(fn)
        jax.block_until_ready(fn(x))
        calls = 10
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(calls):
                y = fn(x)
            jax.block_until_ready(y)
            times.append((time.perf_counter() - t0) / calls)
        return work / statistics.median(times)

    n = matmul_size
    out = {f"matmul_{name}_flops_per_s": rate(lambda a: a @ a, jnp.ones((n, n), dtype) / n, 2 * n ** 3)
           for name, dtype in (("fp32", jnp.float32), ("bf16", jnp.bfloat16))}
    elements = copy_mib * 2 ** 20 // 4
    out["copy_bytes_per_s"] = rate(lambda x: x * 2.0, jnp.ones(elements, jnp.float32), 2 * 4 * elements)
    return {**out, "matmul_size": n, "copy_mib": copy_mib}


def floors(costs: dict, rates: dict) -> dict:
    """Rough ceilings on images/s for this device: training FLOPs against the measured matmul rate, and a lower
    bound on activation traffic (each conv output written and read once, its gradient written and read once)
    against the measured copy bandwidth. Real steps move several times those bytes (BatchNorm, ReLU, adds)."""
    flops, acts = costs["train_flops_per_image"], costs["conv_output_elements_per_image"]
    out = {"compute_fp32_images_per_s": rates["matmul_fp32_flops_per_s"] / flops,
           "compute_bf16_images_per_s": rates["matmul_bf16_flops_per_s"] / flops}
    if not acts:   # a family without convolutions: no activation bound
        return out
    return {**out,
            "activation_bytes_fp32_per_image": 4 * acts * 4,
            "memory_fp32_images_per_s": rates["copy_bytes_per_s"] / (4 * acts * 4),
            "memory_bf16_images_per_s": rates["copy_bytes_per_s"] / (4 * acts * 2)}


def xla_costs(fn, *args) -> dict:
    """XLA's own count for one call of `fn` (lowered, unoptimised HLO: bytes are an unfused upper bound)."""
    try:
        cost = fn.lower(*args).cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        return {"flops": float(cost.get("flops", float("nan"))),
                "bytes_accessed": float(cost.get("bytes accessed", float("nan")))}
    except Exception as e:  # cost analysis is a diagnostic; some backends do not provide it
        return {"error": repr(e)}
