"""Throughput of elax's masked train step against the PyTorch reference recipe, in one process on one device.

    python benchmarks/throughput.py --out results.json                                   # CIFAR ResNet-20, 56
    python benchmarks/throughput.py --models cifar_vgg_16 --out vgg.json                 # CIFAR VGG-16, batch 128
    python benchmarks/throughput.py --models imagenet_resnet_18,imagenet_resnet_50 --batch-size 256 \
        --epoch-images 5120 --out imagenet.json                                          # 224x224, 1000 classes

Any registry model: images of its family's input shape (CIFAR 32x32x3, ImageNet 224x224x3), random data on the
device, the PyTorch reference written the same way (`torch_model`). The epoch rows use the CIFAR in-jit
augmentation (pad-4 crop + flip) for every family: a proxy for the input cost, not ImageNet's RandomResizedCrop.

Measures images/s (median over repeats, after a compiling warm-up) for each model at one batch size, on the path
that `elax.train.Trainer.train_steps` takes on this backend (the `path` of each row): "fused", many steps in one
jitted fori_loop (accelerators), or "per-step", one jitted call per step (CPU, where XLA runs backward
convolutions inside a loop 15-40x slower: jax-ml/jax#12868, docs/performance.md).
  elax step      `elax.train.train_step` on a fixed, pre-normalised batch on the device, `--steps` steps per timed
                 call on that path: masked fp32, dense fp32 (masked=False), masked bf16. The pure step rate.
  elax epoch     `Trainer.train_steps` over a whole epoch of CIFAR-shaped random uint8 data on the device: in-jit
                 shuffle, gather, crop, flip and normalise (the real input path); also without augmentation. For
                 the record, the same epoch on the path not taken (`fused_loop` forced): on CPU the fused loop,
                 one call of one step (it is that slow); on accelerators one call per step, a whole epoch.
                 `--skip-other-path` leaves it out.
  torch          OpenLTH-style CIFAR ResNet in eager mode, SGD(0.1, momentum 0.9, wd 1e-4), masks re-applied
                 (`param.mul_(mask)`) after every step, NCHW, on a fixed batch on the same device. fp32 is the
                 reference; also bf16 autocast, and torch.compile with --torch-compile. PyTorch is optional.
Prints one table per model and writes all numbers and metadata as JSON. Defaults depend on jax.default_backend():
accelerators time 100-step repeats and real 50,000-image epochs; CPU runs are short (5-step repeats, a 640-image
epoch).
"""

import argparse
import dataclasses
import datetime
import functools
import math
import os
import platform
import statistics
import sys
import time
from typing import Callable

# JAX would otherwise reserve 75% of GPU memory and starve the PyTorch reference in the same process.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import flax
import jax
import jaxlib
import jax.numpy as jnp
import numpy as np
import optax

from elax import config as config_lib, data as data_lib, masks, pruning, runs, train, workdir
from elax.models import family_of, get_model, init_variables

CIFAR_SHAPE = (32, 32, 3)
CIFAR_TRAIN_IMAGES = 50_000
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
PRUNE_LEVELS = 7            # IMP levels of 20%: 79.03% sparsity

REFERENCE = "torch_eager_fp32"
DENSE = "elax_step_dense_fp32"
LABELS = {
    "torch_eager_fp32": "torch eager fp32 (reference)",
    "torch_eager_bf16": "torch eager bf16 autocast",
    "torch_compile_fp32": "torch.compile fp32",
    "elax_step_masked_fp32": "elax step masked fp32",
    "elax_step_dense_fp32": "elax step dense fp32",
    "elax_step_masked_bf16": "elax step masked bf16",
    "elax_epoch_noaug_masked_fp32": "elax epoch masked fp32, no augment",
    "elax_epoch_masked_fp32": "elax epoch masked fp32 (real input)",
    "elax_epoch_fused_masked_fp32": "elax epoch, fused loop forced (slow on CPU)",
    "elax_epoch_per_step_masked_fp32": "elax epoch, 1 call/step forced",
}


# -- analytic floors --------------------------------------------------------------------------------------------

def model_costs(model, image_shape=CIFAR_SHAPE) -> dict:
    """Conv/dense multiply-accumulates and conv-output elements per image, counted over the layers a traced (not
    run) forward pass calls: any family."""
    macs = acts = 0

    def count(next_fun, args, kwargs, context):
        nonlocal macs, acts
        out = next_fun(*args, **kwargs)
        layer = context.module
        if context.method_name == "__call__" and isinstance(layer, (flax.linen.Conv, flax.linen.Dense)):
            outputs = math.prod(out.shape[1:])
            macs += outputs * math.prod(getattr(layer, "kernel_size", ())) * args[0].shape[-1]
            acts += outputs if isinstance(layer, flax.linen.Conv) else 0
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


# -- elax ---------------------------------------------------------------------------------------------------------

def random_dataset(num_train: int, image_shape=CIFAR_SHAPE, num_classes: int = 10, seed: int = 0):
    """CIFAR-shaped random uint8 images and labels (speed does not depend on pixel values)."""
    return data_lib.synthetic(num_train, 16, image_shape, num_classes=num_classes, seed=seed, mean=CIFAR_MEAN,
                              std=CIFAR_STD)


def make_trainer(model, num_train: int, batch_size: int, *, dtype=jnp.float32, masked=True, augment=True,
                 fused_loop=None, seed=0) -> train.Trainer:
    """The Trainer `elax.runs.setup` builds for the default (CIFAR ResNet) recipe at this batch size."""
    config = config_lib.default_config()
    config.train.batch_size, config.data.augment, config.seed = batch_size, augment, seed
    return runs.make_trainer(config, model, num_train, train.make_mesh(), dtype, masked=masked,
                             fused_loop=fused_loop)


def num_classes(model_name: str) -> int:
    """1000 for the ImageNet families, 10 (CIFAR-10) otherwise."""
    return 1000 if model_name.startswith("imagenet") else 10


def build(model_name: str, **options):
    return get_model(model_name, num_classes=num_classes(model_name), **options)


def make_ticket(model_name: str, image_shape=CIFAR_SHAPE, levels: int = PRUNE_LEVELS, seed: int = 0):
    """(params, batch_stats, mask): init weights and an IMP-style global magnitude mask after `levels` levels, over
    the weights the family prunes."""
    variables = init_variables(build(model_name), jax.random.key(seed), image_shape)
    params = variables["params"]
    mask = masks.build(params)
    prunable = family_of(model_name).prunable
    for _ in range(levels):
        mask = pruning.prune_magnitude(params, mask, 0.2, prunable)
    return params, variables["batch_stats"], mask


@dataclasses.dataclass(frozen=True)
class Plan:
    """What to time: `repeats` calls of `steps` steps each (fewer once `max_seconds` of timed work are spent)."""
    batch_size: int = 128
    steps: int = 100
    warmup: int = 20
    repeats: int = 5
    max_seconds: float = 60.0
    epoch_images: int = CIFAR_TRAIN_IMAGES
    epoch_repeats: int = 3
    matmul_size: int = 8192
    copy_mib: int = 1024


def _seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _time_repeats(call, repeats: int, max_seconds: float) -> list[float]:
    """Seconds of each blocking `call()`; at least one, at most `repeats`, none begun after `max_seconds`."""
    times = [_seconds(call)]
    while len(times) < repeats and sum(times) < max_seconds:
        times.append(_seconds(call))
    return times


def _compilations(jitted):
    """How many programs `jitted` holds (1 when nothing recompiled); None where JAX does not say."""
    size = getattr(jitted, "_cache_size", None)
    return size() if size else None


def _record(times, steps, batch_size, **extra) -> dict:
    images = steps * batch_size
    return {"images_per_s": statistics.median(images / t for t in times), "times_s": times, "steps": steps,
            "images_per_repeat": images, **extra}


def fused_loop(trainer: train.Trainer | None = None) -> bool:
    """The path `trainer.train_steps` takes (without a trainer: this backend's default)."""
    return trainer.runs_fused if trainer is not None else train.fused_by_default()


def _fixed_batch(data: data_lib.DeviceSource, batch_size: int, dtype):
    images = data_lib.normalize(data.train_images[:batch_size], data.mean, data.std, dtype)
    return jax.block_until_ready((images, data.train_labels[:batch_size]))


def bench_step(trainer, ticket, data, plan: Plan) -> dict:
    """Pure step rate of the real `train_step` on a fixed pre-normalised device batch, on the path `Trainer` takes
    on this backend: `plan.steps` steps in one jitted fori_loop (accelerators), or the jitted `train_step` called
    once per step from Python (CPU)."""
    fused = fused_loop(trainer)
    box = [trainer.replicate(train.create_state(*ticket, trainer.tx))]
    images, labels = _fixed_batch(data, plan.batch_size, trainer.compute_dtype)
    step = functools.partial(train.train_step, apply_fn=trainer.model.apply, tx=trainer.tx,
                             schedule=trainer.schedule, masked=trainer.masked)
    one = jax.jit(step, donate_argnums=(0,))
    costs = xla_costs(one, box[0], images, labels)
    if fused:
        loop = lambda state, num_steps: jax.lax.fori_loop(0, num_steps, lambda _, s: step(s, images, labels)[0],
                                                          state)
        program = jax.jit(loop, donate_argnums=(0,))

        def call(n):   # num_steps is traced: the warm-up call compiles the timed program
            box[0] = jax.block_until_ready(program(box[0], jnp.int32(n)))
    else:
        program = one

        def call(n):
            for _ in range(n):
                box[0], _ = one(box[0], images, labels)
            jax.block_until_ready(box[0])

    warmup_s = _seconds(lambda: call(plan.warmup if fused else max(plan.warmup, 1)))
    times = _time_repeats(lambda: call(plan.steps), plan.repeats, plan.max_seconds)
    return _record(times, plan.steps, plan.batch_size, path="fused" if fused else "per-step", warmup_s=warmup_s,
                   compilations=_compilations(program), xla_cost_per_step=costs)


def bench_epoch(trainer, ticket, data, plan: Plan, steps: int | None = None) -> dict:
    """`Trainer.train_steps` itself: in-jit shuffle, gather, (crop, flip,) normalise, step; `steps` per timed call
    (default: a whole epoch).

    The state comes from `create_state` exactly as `elax.lottery` makes it; warm-up calls are repeated until
    nothing new compiles, and the number of compilations is recorded. The path is read off the program that
    `train_steps` built.
    """
    box = [train.create_state(*ticket, trainer.tx)]

    def call(n):
        box[0], _ = jax.block_until_ready(trainer.train_steps(box[0], data, n))

    # Trainer's cached programs (jitted on first use): the fused loop, the single step, or both if it ran both.
    kinds = {"_run_steps": "fused", "_one_step": "per-step"}
    built = lambda: [name for name in kinds if name in vars(trainer)]
    programs = lambda: sum(_compilations(getattr(trainer, name)) or 0 for name in built())
    # A per-step call of 0 steps runs no step: warm up with at least one.
    warmup_s = [_seconds(lambda: call(plan.warmup if fused_loop(trainer) else max(plan.warmup, 1)))]
    while len(warmup_s) < 4:
        before = programs()
        warmup_s.append(_seconds(lambda: call(0)))
        if programs() == before:
            break
    # Timed calls start a few steps into an epoch: the work is the same (one permutation per call, batch
    # indices wrap around the epoch).
    steps = steps or trainer.steps_per_epoch
    times = _time_repeats(lambda: call(steps), plan.epoch_repeats, plan.max_seconds)
    return _record(times, steps, plan.batch_size, path="+".join(kinds[n] for n in built()), warmup_s=warmup_s,
                   epoch_images=data.num_train, compilations=programs())


# Per platform. CPU runs are short: a ResNet-56 train step of 128 images takes ~2 s on two cores.
DEFAULTS = {
    "cpu": Plan(steps=5, warmup=1, repeats=5, max_seconds=20.0, epoch_images=640, epoch_repeats=3,
                matmul_size=2048, copy_mib=64),
    "gpu": Plan(),
    "tpu": Plan(),
}


@dataclasses.dataclass(frozen=True)
class Variant:
    """One elax row: a benchmark, the Trainer it gets, and whether it forces the path Trainer does not take."""
    bench: Callable
    options: dict = dataclasses.field(default_factory=dict)   # make_trainer options
    other_path: bool = False   # the path Trainer does not take on this backend, timed for the record


ELAX_VARIANTS = {
    "elax_step_masked_fp32": Variant(bench_step),
    "elax_step_dense_fp32": Variant(bench_step, {"masked": False}),
    "elax_step_masked_bf16": Variant(bench_step, {"dtype": jnp.bfloat16}),
    "elax_epoch_noaug_masked_fp32": Variant(bench_epoch, {"augment": False}),
    "elax_epoch_masked_fp32": Variant(bench_epoch),
    # CPU only: the fused loop, 15-40x slower there (jax-ml/jax#12868): one compile, then one call of one step.
    "elax_epoch_fused_masked_fp32": Variant(bench_epoch, {"fused_loop": True}, other_path=True),
    # Accelerators only: one call per step, what the fused loop saves there.
    "elax_epoch_per_step_masked_fp32": Variant(bench_epoch, {"fused_loop": False}, other_path=True),
}


def _selected(name: str, variant: Variant, variants, other_path: bool) -> bool:
    """In `variants` (None: all), and for an `other_path` row: wanted, and its path not this backend's default."""
    if variants is not None and name not in variants:
        return False
    return not variant.other_path or (other_path and variant.options["fused_loop"] != fused_loop())


def bench_elax(model_name, plan: Plan, image_shape=CIFAR_SHAPE, variants=None, other_path=True,
               log=print) -> tuple[dict, dict]:
    """All elax variants of one model that run on this backend -> ({variant: record}, ticket info)."""
    ticket = make_ticket(model_name, image_shape)
    mesh = train.make_mesh()
    classes = num_classes(model_name)
    step_data = data_lib.put_on_devices(random_dataset(plan.batch_size, image_shape, classes), mesh)
    epoch_data = data_lib.put_on_devices(random_dataset(plan.epoch_images, image_shape, classes, seed=1), mesh)
    results = {}
    for name, v in ELAX_VARIANTS.items():
        if not _selected(name, v, variants, other_path):
            continue
        epoch = v.bench is bench_epoch
        model = build(model_name, dtype=v.options.get("dtype", jnp.float32))
        trainer = make_trainer(model, plan.epoch_images if epoch else plan.batch_size, plan.batch_size, **v.options)
        data = epoch_data if epoch else step_data
        if v.other_path and fused_loop(trainer):
            # The fused loop on CPU, slow: compile only, then one timed call of one step.
            results[name] = bench_epoch(trainer, ticket, data, dataclasses.replace(plan, warmup=0, epoch_repeats=1),
                                        steps=1)
        else:
            results[name] = v.bench(trainer, ticket, data, plan)
        log(f"  {model_name} {name} ({results[name]['path']}): {results[name]['images_per_s']:.1f} images/s")
    kept, total = masks.count(ticket[2], family_of(model_name).prunable)
    info = {"sparsity": 1.0 - kept / total, "kept_weights": kept, "prunable_weights": total,
            "params": int(sum(np.size(p) for p in jax.tree.leaves(ticket[0])))}
    return results, info


# -- PyTorch reference --------------------------------------------------------------------------------------------

def torch_resnet(depth: int, width: int = 16, num_classes: int = 10):
    """OpenLTH's CIFAR ResNet-`depth` in PyTorch: same architecture as elax (option-B 1x1 conv shortcuts)."""
    import torch.nn as nn
    import torch.nn.functional as F

    class Block(nn.Module):
        def __init__(self, f_in, f_out, downsample):
            super().__init__()
            stride = 2 if downsample else 1
            self.conv1 = nn.Conv2d(f_in, f_out, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(f_out)
            self.conv2 = nn.Conv2d(f_out, f_out, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(f_out)
            self.shortcut = nn.Sequential()
            if downsample or f_in != f_out:
                self.shortcut = nn.Sequential(nn.Conv2d(f_in, f_out, 1, stride, bias=False), nn.BatchNorm2d(f_out))

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return F.relu(out + self.shortcut(x))

    class ResNet(nn.Module):
        def __init__(self):
            super().__init__()
            n = (depth - 2) // 6
            self.conv = nn.Conv2d(3, width, 3, 1, 1, bias=False)
            self.bn = nn.BatchNorm2d(width)
            blocks, f_in = [], width
            for s in range(3):
                f_out = width * 2 ** s
                for b in range(n):
                    blocks.append(Block(f_in, f_out, s > 0 and b == 0))
                    f_in = f_out
            self.blocks = nn.Sequential(*blocks)
            self.fc = nn.Linear(f_in, num_classes)

        def forward(self, x):
            out = F.relu(self.bn(self.conv(x)))
            out = self.blocks(out)
            out = F.avg_pool2d(out, out.size()[3]).flatten(1)
            return self.fc(out)

    return ResNet()


def torch_vgg(stage_channels, num_classes: int = 10):
    """OpenLTH's CIFAR VGG in PyTorch: conv3x3 (bias) - BN - ReLU units, max-pools between stages, 2x2 avg pool."""
    import torch.nn as nn

    layers, f_in = [], 3
    for s, channels in enumerate(stage_channels):
        if s > 0:
            layers.append(nn.MaxPool2d(2))
        for f_out in channels:
            layers += [nn.Conv2d(f_in, f_out, 3, 1, 1), nn.BatchNorm2d(f_out), nn.ReLU()]
            f_in = f_out
    layers += [nn.AvgPool2d(2), nn.Flatten()]
    model = nn.Sequential(*layers)
    model.add_module("fc", nn.Linear(f_in, num_classes))
    return model


def torch_imagenet_resnet(stage_sizes, bottleneck: bool, width: int = 64, num_classes: int = 1000):
    """torchvision's ResNet (v1.5) written out: BasicBlock or Bottleneck stages, downsampling in block 0."""
    import torch.nn as nn
    import torch.nn.functional as F

    expansion = 4 if bottleneck else 1

    class Block(nn.Module):
        def __init__(self, f_in, features, stride):
            super().__init__()
            f_out = features * expansion
            if bottleneck:
                convs = [(f_in, features, 1, 1), (features, features, 3, stride), (features, f_out, 1, 1)]
            else:
                convs = [(f_in, features, 3, stride), (features, features, 3, 1)]
            self.convs = nn.ModuleList(nn.Conv2d(a, b, k, st, k // 2, bias=False) for a, b, k, st in convs)
            self.bns = nn.ModuleList(nn.BatchNorm2d(b) for _, b, _, _ in convs)
            self.down = nn.Sequential()
            if stride != 1 or f_in != f_out:
                self.down = nn.Sequential(nn.Conv2d(f_in, f_out, 1, stride, bias=False), nn.BatchNorm2d(f_out))

        def forward(self, x):
            out = x
            for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
                out = bn(conv(out))
                out = F.relu(out) if i < len(self.convs) - 1 else out
            return F.relu(out + self.down(x))

    layers, f_in = [nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                    nn.MaxPool2d(3, 2, 1)], width
    for s, n in enumerate(stage_sizes):
        for b in range(n):
            layers.append(Block(f_in, width * 2 ** s, 2 if (s > 0 and b == 0) else 1))
            f_in = width * 2 ** s * expansion
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    model = nn.Sequential(*layers)
    model.add_module("fc", nn.Linear(f_in, num_classes))
    return model


def torch_model(model_name: str):
    """The PyTorch reference of a registry model, written the way elax builds it."""
    model = build(model_name)
    family = family_of(model).name
    if family == "cifar_resnet":
        return torch_resnet(6 * model.stage_sizes[0] + 2, model.width, model.num_classes)
    if family == "cifar_vgg":
        return torch_vgg(model.stage_channels, model.num_classes)
    return torch_imagenet_resnet(model.stage_sizes, model.bottleneck, model.width, model.num_classes)


def torch_device():
    """The torch device matching JAX's backend, or None when torch cannot use it."""
    import torch
    backend = jax.default_backend()
    if backend == "cpu":
        return torch.device("cpu")
    if backend == "gpu" and torch.cuda.is_available():
        return torch.device("cuda")
    return None


def bench_torch(model_name, plan: Plan, *, device, bf16=False, compile=False, image_shape=CIFAR_SHAPE,
                sparsity=1 - 0.8 ** PRUNE_LEVELS, seed=0) -> dict:
    """The official recipe: eager SGD steps, masks re-applied after every optimizer step, fixed device batch."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    model = torch_model(model_name).to(device).train()
    # Global magnitude mask over conv and dense weights (the prunable set of ELTH.md section 1; not a VGG's fc).
    skip_fc = "head" in family_of(model_name).prune_exclude
    prunable = [p for name, p in model.named_parameters()
                if name.endswith("weight") and p.dim() >= 2 and not (skip_fc and name.startswith("fc."))]
    with torch.no_grad():
        scores = torch.cat([p.abs().flatten() for p in prunable])
        threshold = scores.kthvalue(max(1, int(round(sparsity * scores.numel())))).values
        pairs = [(p, (p.abs() > threshold).to(p.dtype)) for p in prunable]
        for p, m in pairs:
            p.mul_(m)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    h, w, c = image_shape
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(plan.batch_size, c, h, w, generator=gen).to(device)
    y = torch.randint(0, num_classes(model_name), (plan.batch_size,), generator=gen).to(device)
    forward = torch.compile(model) if compile else model
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(forward(x), y)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for p, m in pairs:
                p.mul_(m)

    def call(n):
        for _ in range(n):
            step()
        sync()

    warmup_s = _seconds(lambda: call(max(plan.warmup, 1)))
    times = _time_repeats(lambda: call(plan.steps), plan.repeats, plan.max_seconds)
    return _record(times, plan.steps, plan.batch_size, warmup_s=warmup_s, threads=torch.get_num_threads(),
                   memory_format="NCHW (contiguous)")


def bench_torch_all(model_name, plan: Plan, *, compile=False, image_shape=CIFAR_SHAPE, variants=None,
                    log=print) -> tuple[dict, str | None]:
    """Torch variants of one model -> ({variant: record}, note on anything skipped)."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return {}, "torch is not installed (pip install torch): PyTorch reference skipped"
    device = torch_device()
    if device is None:
        return {}, f"torch cannot use JAX's backend {jax.default_backend()!r}: PyTorch reference skipped"
    results, notes = {}, []
    runs = {"torch_eager_fp32": {}, "torch_eager_bf16": {"bf16": True}}
    if compile:
        runs["torch_compile_fp32"] = {"compile": True}
    for name, kw in runs.items():
        if variants is not None and name not in variants:
            continue
        try:
            results[name] = bench_torch(model_name, plan, device=device, image_shape=image_shape, **kw)
            log(f"  {model_name} {name}: {results[name]['images_per_s']:.1f} images/s")
        except Exception as e:  # bf16 or torch.compile may be unsupported on a platform; the rest still runs
            if name == REFERENCE:
                raise
            notes.append(f"{name} failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    return results, "; ".join(notes) or None


# -- report -------------------------------------------------------------------------------------------------------

def add_ratios(results: dict) -> None:
    """ratio_vs_torch: against torch eager fp32. ratio_vs_dense: against elax's dense fp32 step, for elax rows on
    the same path (None for a row on the other path)."""
    rate = lambda k: results.get(k, {}).get("images_per_s")
    dense = results.get(DENSE, {})
    for name, r in results.items():
        same_path = "path" in r and r["path"] == dense.get("path")
        r["ratio_vs_torch"] = r["images_per_s"] / rate(REFERENCE) if rate(REFERENCE) else None
        r["ratio_vs_dense"] = r["images_per_s"] / dense["images_per_s"] if same_path else None


def check_targets(results: dict, model_name: str = "cifar_resnet_20") -> dict:
    """The issues' targets, on the rows of Trainer's path (set for H100/H200; elsewhere recorded, not expected):
    CIFAR families >= 3x PyTorch eager fp32; ImageNet ResNets >= 1.5x (fp32) and >= 2x (bf16 masked)."""
    rate = lambda k: results.get(k, {}).get("images_per_s")

    def target(num, den, goal, op):
        if rate(num) is None or rate(den) is None:
            return {"value": None, "goal": goal, "met": None}
        value = rate(num) / rate(den)
        return {"value": value, "goal": goal, "met": bool(op(value))}

    at_least = lambda x: lambda v: v >= x
    if model_name.startswith("imagenet"):
        return {
            "step_masked_fp32_vs_torch": target("elax_step_masked_fp32", REFERENCE, ">= 1.5", at_least(1.5)),
            "step_masked_bf16_vs_torch": target("elax_step_masked_bf16", REFERENCE, ">= 2", at_least(2.0)),
            "step_masked_vs_dense_fp32": target("elax_step_masked_fp32", DENSE, ">= 0.97", at_least(0.97)),
        }
    return {
        "step_masked_fp32_vs_torch": target("elax_step_masked_fp32", REFERENCE, ">= 3", at_least(3.0)),
        "step_masked_vs_dense_fp32": target("elax_step_masked_fp32", DENSE, ">= 0.97", at_least(0.97)),
        "step_bf16_vs_fp32": target("elax_step_masked_bf16", "elax_step_masked_fp32", "> 1", lambda v: v > 1.0),
        "epoch_vs_step_fp32": target("elax_epoch_masked_fp32", "elax_step_masked_fp32", ">= 0.90", at_least(0.90)),
    }


def format_table(model_name: str, entry: dict, meta: dict) -> str:
    fmt = lambda v: "-" if v is None else f"{v:.2f}"
    lines = [f"{model_name} | batch {meta['batch_size']} | sparsity {entry['ticket']['sparsity']:.2%} | "
             f"{meta['device_kind']} ({meta['backend']})",
             f"{'variant':<44} {'path':<8} {'images/s':>10} {'vs torch':>9} {'vs dense':>9}"]
    for name, r in entry["results"].items():
        lines.append(f"{LABELS.get(name, name):<44} {r.get('path', '-'):<8} {r['images_per_s']:>10.1f} "
                     f"{fmt(r['ratio_vs_torch']):>9} {fmt(r['ratio_vs_dense']):>9}")
    for name, t in entry["targets"].items():
        met = {True: "met", False: "NOT met", None: "n/a"}[t["met"]]
        lines.append(f"  {name}: {fmt(t['value'])} (goal {t['goal']}): {met}")
    f = entry["floors"]
    memory = (f"; activation bytes fp32 {f['memory_fp32_images_per_s']:.0f}, bf16 "
              f"{f['memory_bf16_images_per_s']:.0f}") if "memory_fp32_images_per_s" in f else ""
    lines.append(f"  floors on this device (images/s): compute fp32 {f['compute_fp32_images_per_s']:.0f}, bf16 "
                 f"{f['compute_bf16_images_per_s']:.0f}{memory}")
    if entry.get("torch_note"):
        lines.append(f"  note: {entry['torch_note']}")
    return "\n".join(lines)


def _load_average():
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def metadata(plan: Plan) -> dict:
    try:
        import torch
        torch_version, torch_threads = torch.__version__, torch.get_num_threads()
    except ImportError:
        torch_version = torch_threads = None
    cpu = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "backend": jax.default_backend(), "device_kind": jax.devices()[0].device_kind,
        "num_devices": jax.device_count(), "cpu": cpu, "cpu_count": os.cpu_count(),
        "load_average_start": _load_average(), "python": platform.python_version(), "jax": jax.__version__,
        "jaxlib": jaxlib.__version__, "flax": flax.__version__, "optax": optax.__version__,
        "numpy": np.__version__, "torch": torch_version, "torch_threads": torch_threads,
        **dataclasses.asdict(plan), "prune_levels": PRUNE_LEVELS,
        "step_input": "fixed pre-normalised batch on the device", "torch_layout": "NCHW",
        "trainer_path": "fused" if fused_loop() else "per-step",   # Trainer.train_steps' default here
        "command": " ".join(sys.argv), "xla_flags": os.environ.get("XLA_FLAGS", ""),  # they change the numbers
    }


def make_plan(args) -> Plan:
    """`args` over the defaults of jax.default_backend()."""
    plan = DEFAULTS.get(jax.default_backend(), DEFAULTS["gpu"])
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(Plan) if getattr(args, f.name) is not None}
    return dataclasses.replace(plan, **given)


def run(args, image_shape=None, log=print) -> dict:
    """Run every model of `args` and return the JSON-ready results (also written to args.out as it goes).

    Images are of each model's family input shape (CIFAR 32x32, ImageNet 224x224) unless `image_shape` is given.
    """
    shape_of = lambda name: tuple(image_shape or family_of(name).input_shape)
    plan = make_plan(args)
    out = {"metadata": metadata(plan), "device_rates": device_rates(plan.matmul_size, plan.copy_mib), "models": {}}
    log("device rates: " + ", ".join(f"{k} {v:.4g}" for k, v in out["device_rates"].items()))
    for model_name in args.models:
        t0 = time.perf_counter()
        # elax first: on GPUs, JAX then loads its own cuDNN before torch brings another one.
        results, ticket = bench_elax(model_name, plan, shape_of(model_name), args.variants,
                                     not args.skip_other_path, log)
        compile = args.torch_compile or "torch_compile_fp32" in (args.variants or ())
        torch_results, note = ({}, "skipped (--skip-torch)") if args.skip_torch else bench_torch_all(
            model_name, plan, compile=compile, image_shape=shape_of(model_name), variants=args.variants, log=log)
        results = {**torch_results, **results}
        add_ratios(results)
        costs = model_costs(build(model_name), shape_of(model_name))
        entry = {"ticket": ticket, "results": results, "targets": check_targets(results, model_name), "torch_note": note,
                 "costs": {**costs, "input_bytes_per_image": input_bytes_per_image(shape_of(model_name))},
                 "floors": floors(costs, out["device_rates"]), "wall_s": time.perf_counter() - t0}
        out["models"][model_name] = entry
        log(format_table(model_name, entry, out["metadata"]))
        out["metadata"]["load_average_end"] = _load_average()
        if args.out:
            workdir.write_json(args.out, out)
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="cifar_resnet_20,cifar_resnet_56",
                   type=lambda s: [m for m in s.split(",") if m])
    p.add_argument("--batch-size", type=int, default=None, help="default 128")
    p.add_argument("--steps", type=int, default=None, help="timed steps per repeat (default: 100; CPU 5)")
    p.add_argument("--warmup", type=int, default=None,
                   help="steps of the first (compiling) call (default: 20; CPU 1; 0 = compile only, fused path)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats, median reported (default: 5)")
    p.add_argument("--max-seconds", type=float, default=None,
                   help="no new repeat once a variant has been timed this long (default: 60; CPU 20)")
    p.add_argument("--epoch-images", type=int, default=None,
                   help="images in the epoch benchmark (default: 50,000 = CIFAR-10; CPU 640)")
    p.add_argument("--epoch-repeats", type=int, default=None, help="timed epochs (default: 3)")
    p.add_argument("--matmul-size", type=int, default=None, help="matmul of the device-rate probe (8192; CPU 2048)")
    p.add_argument("--copy-mib", type=int, default=None, help="array copied by the bandwidth probe (1024; CPU 64)")
    p.add_argument("--variants", default=None, type=lambda s: [v for v in s.split(",") if v],
                   help=f"comma-separated subset of: {', '.join(LABELS)} (default: all)")
    p.add_argument("--out", default="", help="write the results as JSON here")
    p.add_argument("--skip-torch", action="store_true", help="do not run the PyTorch reference")
    p.add_argument("--torch-compile", action="store_true", help="also time torch.compile (slow to compile)")
    p.add_argument("--skip-other-path", action="store_true",
                   help="do not time the epoch on the path Trainer does not take here (CPU: the fused loop, "
                        "one step, ~1 min for ResNet-56; accelerators: one call per step)")
    return p.parse_args(argv)


def main(argv=None):
    run(parse_args(argv), log=functools.partial(print, flush=True))


if __name__ == "__main__":
    main()
