"""Stacked runs: images/s of K tickets of one model trained in one program (`Trainer.train_steps_stacked`)
against one ticket (`Trainer.train_steps`), and the wall time of configs/elth_cifar.py projected from them.

    python benchmarks/stacked.py --out stacked.json                  # ResNet-20 and -56, K = 1, 4, 8, fp32 + bf16
    python benchmarks/stacked.py --smoke                             # seconds: checks that it runs

Each row trains a whole epoch of CIFAR-shaped random uint8 data on the device (in-jit shuffle, crop, flip, normalise:
the real input path) on the path Trainer takes here, after a compiling warm-up epoch; K=1 is the unstacked
train_steps. Data, trainer (the CIFAR recipe) and 79%-sparse tickets are throughput.py's. The projection counts the
trainings of configs/elth_cifar.py (see `elth_cifar_trainings`): IMP levels run one after another (each prunes the
last), the ETT and baseline levels of a target stack K at a time.
"""

import argparse
import datetime
import json
import math
import platform
import time

import jax
import jax.numpy as jnp

from elax import data as data_lib, train
from elax.models import get_model

CIFAR_SHAPE = (32, 32, 3)


def elth_cifar_trainings(levels: int = 15, baselines: int = 6, source: str = "cifar_resnet_20",
                         targets=("cifar_resnet_32", "cifar_resnet_56")) -> dict:
    """{model: {"sequential": n, "stackable": m}} trainings of configs/elth_cifar.py (each a full schedule):
    IMP on the source and each target (levels + 1, sequential); per target, ETT (levels + 1: the dense level 0
    transfers too) and every baseline at levels 1..levels (stackable)."""
    out = {source: {"sequential": levels + 1, "stackable": 0}}
    for target in targets:
        out[target] = {"sequential": levels + 1, "stackable": (levels + 1) + baselines * levels}
    return out


def project_hours(trainings: dict, epochs: int, epoch_seconds: dict, stack: int) -> float:
    """Wall hours: sequential trainings at the K=1 epoch time, stackable ones ceil(n / K) programs at the
    K-stack's epoch time. epoch_seconds[model][K] is the time of one epoch of K stacked runs."""
    total = 0.0
    for model, count in trainings.items():
        one, stacked = epoch_seconds[model][1], epoch_seconds[model][stack]
        total += count["sequential"] * epochs * one + math.ceil(count["stackable"] / stack) * epochs * stacked
    return total / 3600


def epoch_seconds(model_name: str, k: int, dtype, num_train: int, batch: int, shape=CIFAR_SHAPE) -> float:
    """Seconds of one epoch of K stacked runs (K=1: unstacked), after a compiling warm-up epoch."""
    import throughput  # benchmarks/throughput.py, beside this script: its data, trainer and ticket helpers
    model = get_model(model_name, dtype=dtype)
    trainer = throughput.make_trainer(model, num_train, batch, dtype=dtype)
    source = data_lib.put_on_devices(throughput.random_dataset(num_train, shape), trainer.mesh)
    states = [train.create_state(*throughput.make_ticket(model_name, shape, seed=seed), trainer.tx)
              for seed in range(k)]   # 79% sparse, each run its own init
    steps = trainer.steps_per_epoch
    if k == 1:
        run = lambda s: trainer.train_steps(s, source, steps)
        state = states[0]
    else:
        run = lambda s: trainer.train_steps_stacked(s, list(range(k)), source, steps)
        state = train.stack(states)
    state, sums = run(state)                      # compiles
    jax.block_until_ready(sums)
    state = state.replace(step=state.step * 0)    # the same epoch again
    start = time.perf_counter()
    state, sums = run(state)
    jax.block_until_ready(sums)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="cifar_resnet_20,cifar_resnet_56")
    parser.add_argument("--stacks", default="1,4,8")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--epoch-images", type=int, default=0, help="default: 50,000 on GPU, 1,280 on CPU")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    models = args.models.split(",")
    stacks = [int(k) for k in args.stacks.split(",")]
    dtypes = args.dtypes.split(",")
    images = args.epoch_images or (50_000 if jax.default_backend() != "cpu" else 1_280)
    if args.smoke:
        models, stacks, dtypes, images, args.batch_size = ["cifar_resnet_8_4"], [1, 2], ["float32"], 64, 16
    scale = 50_000 / images   # epoch times are projected to CIFAR-10's 50,000 images
    result = {"date": datetime.date.today().isoformat(), "backend": jax.default_backend(),
              "device": jax.devices()[0].device_kind, "jax": jax.__version__, "python": platform.python_version(),
              "epoch_images": images, "batch_size": args.batch_size, "rows": {}, "projection_hours": {}}
    for dtype in dtypes:
        seconds = {}
        for model_name in models:
            seconds[model_name] = {}
            for k in stacks:
                t = epoch_seconds(model_name, k, jnp.dtype(dtype), images, args.batch_size) * scale
                seconds[model_name][k] = t
                rate = k * 50_000 / t
                result["rows"][f"{model_name} {dtype} K={k}"] = {"epoch_s_per_50k": t, "images_per_s": rate}
                print(f"{model_name:<18} {dtype:<9} K={k}: {rate:9.0f} images/s ({t:.2f} s per 50k-image epoch "
                      f"of {k} run{'s' if k > 1 else ''})", flush=True)
        if set(models) >= {"cifar_resnet_20", "cifar_resnet_56"}:
            # ResNet-32 is not timed: its epoch is interpolated by depth between 20 and 56.
            r20, r56 = seconds["cifar_resnet_20"], seconds["cifar_resnet_56"]
            seconds["cifar_resnet_32"] = {k: r20[k] + (r56[k] - r20[k]) * (32 - 20) / (56 - 20) for k in stacks}
            trainings = elth_cifar_trainings()
            for k in stacks:
                hours = project_hours(trainings, 160, seconds, k)
                result["projection_hours"][f"{dtype} K={k}"] = hours
                print(f"configs/elth_cifar.py, {dtype}, stack {k}: {hours:.1f} h", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
