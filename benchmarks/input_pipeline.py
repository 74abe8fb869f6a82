"""Images/s of the streamed input pipeline per host against the train step's images/s, so a reader sees whether
input or compute limits a run.

    python benchmarks/input_pipeline.py --out pipeline.json                  # 3,000 JPEGs, all worker counts
    python benchmarks/input_pipeline.py --smoke                              # seconds: a tiny check it runs

1. Writes ImageFolder JPEGs of ImageNet's typical size (~400x350 px, smooth random content at quality 90, which
   compresses like photographs: ~40-60 KB) into --images-dir (kept and reused).
2. Decoders: decode + RandomResizedCrop 224 + flip of each JPEG in this process, one core, with simplejpeg,
   OpenCV and PIL (the choice in elax.data.images follows these numbers).
3. Pipeline: `StreamSource.train_batches` (Grain: read, decode, augment, batch; put on the device) over the
   folder, by number of Grain worker processes (0 = threads in this process), after a warm-up batch.
4. Train step: ImageNet ResNet-18 (or --model), masked fp32, 79% sparse, on a fixed batch of 224x224 images on
   the default device (benchmarks/throughput.py's step benchmark).

Prints a table and writes all numbers with the machine and versions as JSON.
"""

import argparse
import datetime
import json
import os
import platform
import time

import numpy as np


def write_jpegs(root: str, count: int, classes: int = 10, seed: int = 0) -> str:
    """root/train/<class>/*.JPEG (and a small val/) of ~400x350 smooth random images; reused if present."""
    import cv2
    import simplejpeg
    train_dir = os.path.join(root, "train")
    if os.path.isdir(train_dir) and sum(len(files) for _, _, files in os.walk(train_dir)) >= count:
        return root
    rng = np.random.default_rng(seed)
    for split, n in (("train", count), ("val", classes)):
        for i in range(n):
            folder = os.path.join(root, split, f"class_{i % classes:02d}")
            os.makedirs(folder, exist_ok=True)
            h, w = int(rng.integers(300, 400)), int(rng.integers(350, 450))
            coarse = rng.integers(0, 256, (h // 16, w // 16, 3), dtype=np.uint8)
            image = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
            image = np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)
            with open(os.path.join(folder, f"{i:06d}.JPEG"), "wb") as f:
                f.write(simplejpeg.encode_jpeg(image, quality=90))
    return root


def decoders() -> dict:
    import cv2
    import simplejpeg
    from PIL import Image
    import io
    return {
        "simplejpeg": lambda data: simplejpeg.decode_jpeg(data, colorspace="RGB"),
        "opencv": lambda data: cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR),
                                            cv2.COLOR_BGR2RGB),
        "pil": lambda data: np.asarray(Image.open(io.BytesIO(data)).convert("RGB")),
    }


def time_decoders(files: list[str], seconds: float) -> dict:
    """Images/s of decode + RandomResizedCrop 224 + flip, one core, per decoder."""
    from elax.data import images as image_ops
    blobs = [open(f, "rb").read() for f in files]
    out = {}
    for name, decode in decoders().items():
        rng, n, start = np.random.default_rng(0), 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            image_ops.train_transform(decode(blobs[n % len(blobs)]), rng, 224)
            n += 1
        out[name] = n / (time.perf_counter() - start)
    return out


def time_pipeline(root: str, workers: int, batch: int, batches: int) -> float:
    """Images/s of StreamSource.train_batches over the folder with `workers` Grain processes."""
    import jax
    from elax import data, train
    from elax.data import records
    splits = records.open_splits("imagefolder", root)
    source = data.StreamSource(splits.train, splits.test, splits.num_classes, splits.mean, splits.std,
                               workers=workers)
    spec = data.BatchSpec(seed=0, batch_size=batch, steps_per_epoch=max(1, len(splits.train) // batch),
                          augment=True)
    batches = min(batches, spec.steps_per_epoch - 1)
    stream = source.train_batches(spec, 0, batches + 1, train.make_mesh())
    jax.block_until_ready(next(stream))          # workers started, first batch decoded
    start = time.perf_counter()
    for images, _ in stream:
        jax.block_until_ready(images)
    seconds = time.perf_counter() - start
    source.close()   # its workers stop now, not when the next worker count is measured
    return batches * batch / seconds


def time_train_step(model_name: str, batch: int, steps: int) -> float:
    """Images/s of the masked fp32 train step on 224x224 images: throughput.py's step benchmark (79% sparse ticket,
    the path Trainer takes on this backend)."""
    import throughput  # benchmarks/throughput.py, beside this script
    from elax import data as data_lib
    shape = (224, 224, 3)
    trainer = throughput.make_trainer(throughput.build(model_name), batch, batch)
    images = throughput.random_dataset(batch, shape, throughput.num_classes(model_name))
    plan = throughput.Plan(batch_size=batch, steps=steps, warmup=1, repeats=1)
    return throughput.bench_step(trainer, throughput.make_ticket(model_name, shape),
                                 data_lib.put_on_devices(images, trainer.mesh), plan)["images_per_s"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images-dir", default="/tmp/elax_jpegs")
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--workers", default="", help="comma-separated worker counts (default 0,1,2,4,... <= cores)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--batches", type=int, default=15)
    parser.add_argument("--decoder-seconds", type=float, default=3.0)
    parser.add_argument("--model", default="imagenet_resnet_18")
    parser.add_argument("--step-batch", type=int, default=0, help="train step batch (default: 256 on GPU, 16 on CPU)")
    parser.add_argument("--steps", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks that it runs")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    import jax
    cores = os.cpu_count() or 1
    if args.smoke:
        args.images, args.batch_size, args.batches, args.decoder_seconds = 64, 16, 2, 0.3
        args.model, args.steps, args.step_batch = args.model + "_8", 1, 2
        args.images_dir = args.images_dir.rstrip("/") + "_smoke"
    workers = [int(w) for w in args.workers.split(",")] if args.workers else sorted(
        {0, 1, 2, 4, 8, 16, cores} & set(range(cores + 1)))
    gpu = jax.default_backend() != "cpu"
    step_batch = args.step_batch or (256 if gpu else 16)
    steps = args.steps or (20 if gpu else 3)

    root = write_jpegs(args.images_dir, args.images)
    files = [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(root, "train")) for f in sorted(fs)][:200]
    sizes = [os.path.getsize(f) for f in files]
    result = {
        "date": datetime.date.today().isoformat(), "machine": platform.processor() or platform.machine(),
        "cores": cores, "device": str(jax.devices()[0].device_kind), "jax": jax.__version__,
        "python": platform.python_version(), "images": args.images, "mean_jpeg_kb": sum(sizes) / len(sizes) / 1e3,
        "batch_size": args.batch_size,
        "decoders_images_per_s_one_core": time_decoders(files, args.decoder_seconds),
        "pipeline_images_per_s": {str(w): time_pipeline(root, w, args.batch_size, args.batches) for w in workers},
        "train_step": {"model": args.model, "batch": step_batch,
                       "images_per_s": time_train_step(args.model, step_batch, steps)},
    }
    print(f"{result['machine']}, {cores} cores, {result['device']}; JPEGs ~{result['mean_jpeg_kb']:.0f} KB")
    print("\ndecode + RandomResizedCrop 224 + flip, one core (images/s)")
    for name, rate in result["decoders_images_per_s_one_core"].items():
        print(f"  {name:<11} {rate:8.0f}")
    print(f"\nstreamed pipeline, batch {args.batch_size} (images/s per host)")
    for w, rate in result["pipeline_images_per_s"].items():
        print(f"  {'threads' if w == '0' else w + ' workers':<11} {rate:8.0f}")
    best = max(result["pipeline_images_per_s"].values())
    step_rate = result["train_step"]["images_per_s"]
    print(f"\ntrain step {args.model}, batch {step_batch}: {step_rate:.0f} images/s -> "
          f"{'input' if best < step_rate else 'compute'} limits a run on this machine")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
