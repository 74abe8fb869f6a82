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
convolutions inside a loop far slower: jax-ml/jax#12868, docs/performance.md).
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

The work is in the sibling modules: bench_floors.py (analytic floors), bench_elax.py (elax rows), bench_torch.py
(PyTorch reference), bench_report.py (ratios, targets, table, metadata); this file is the command line.
"""

import argparse
import dataclasses
import functools
import os
import sys
import time

# JAX would otherwise reserve 75% of GPU memory and starve the PyTorch reference in the same process.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
# Loaded by path (tests/test_benchmark.py), this folder is not on sys.path as it is for a script: the siblings need it.
_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import jax

from elax import workdir
from elax.models import family_of

from bench_elax import Plan, bench_elax
# Re-exported: benchmarks/input_pipeline.py and benchmarks/stacked.py import them from here.
from bench_elax import bench_step, build, make_ticket, make_trainer, num_classes, random_dataset  # noqa: F401
from bench_floors import device_rates, floors, input_bytes_per_image, model_costs
from bench_report import LABELS, add_ratios, check_targets, format_table, load_average, metadata
from bench_torch import bench_torch_all

# Per platform. CPU runs are short: a train step takes seconds there (docs/performance.md).
DEFAULTS = {
    "cpu": Plan(steps=5, warmup=1, repeats=5, max_seconds=20.0, epoch_images=640, epoch_repeats=3,
                matmul_size=2048, copy_mib=64),
    "gpu": Plan(),
    "tpu": Plan(),
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
        entry = {"ticket": ticket, "results": results, "targets": check_targets(results, model_name),
                 "torch_note": note,
                 "costs": {**costs, "input_bytes_per_image": input_bytes_per_image(shape_of(model_name))},
                 "floors": floors(costs, out["device_rates"]), "wall_s": time.perf_counter() - t0}
        out["models"][model_name] = entry
        log(format_table(model_name, entry, out["metadata"]))
        out["metadata"]["load_average_end"] = load_average()
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
