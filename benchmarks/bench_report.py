"""Report of benchmarks/throughput.py: ratios between rows, the issues' targets, the printed table, and the run's
metadata (versions, machine, plan, flags)."""

import dataclasses
import datetime
import os
import platform
import sys

import flax
import jax
import jaxlib
import numpy as np
import optax

from bench_elax import PRUNE_LEVELS, Plan, fused_loop
from bench_torch import REFERENCE

DENSE = "elax_step_dense_fp32"   # the row every ratio_vs_dense is against
LABELS = {   # every row the benchmark can time, as the table names it
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
    """The printed report of one model: a row per variant, then its targets, floors and torch note."""
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


def load_average():
    """The 1, 5 and 15-minute load averages (None where the OS has none): other work skews the numbers."""
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def metadata(plan: Plan) -> dict:
    """Versions, machine, plan and flags of this run: what the numbers depend on."""
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
        "load_average_start": load_average(), "python": platform.python_version(), "jax": jax.__version__,
        "jaxlib": jaxlib.__version__, "flax": flax.__version__, "optax": optax.__version__,
        "numpy": np.__version__, "torch": torch_version, "torch_threads": torch_threads,
        **dataclasses.asdict(plan), "prune_levels": PRUNE_LEVELS,
        "step_input": "fixed pre-normalised batch on the device", "torch_layout": "NCHW",
        "trainer_path": "fused" if fused_loop() else "per-step",   # Trainer.train_steps' default here
        "command": " ".join(sys.argv), "xla_flags": os.environ.get("XLA_FLAGS", ""),  # they change the numbers
    }
