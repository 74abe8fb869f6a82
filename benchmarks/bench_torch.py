"""PyTorch reference of benchmarks/throughput.py: each registry family written in PyTorch the way elax builds it,
and its train step timed with the official recipe. torch is imported only inside these functions (optional)."""

import jax

from elax.models import family_of

from bench_elax import PRUNE_LEVELS, Plan, build, num_classes, record, seconds_of, time_repeats
from bench_floors import CIFAR_SHAPE

REFERENCE = "torch_eager_fp32"   # the row every ratio_vs_torch is against


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
    if family.startswith("imagenet_resnet"):
        return torch_imagenet_resnet(model.stage_sizes, model.bottleneck, model.width, model.num_classes)
    raise NotImplementedError(f"no PyTorch reference of the {family!r} family")


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

    warmup_s = seconds_of(lambda: call(max(plan.warmup, 1)))
    times = time_repeats(lambda: call(plan.steps), plan.repeats, plan.max_seconds)
    return record(times, plan.steps, plan.batch_size, warmup_s=warmup_s, threads=torch.get_num_threads(),
                   memory_format="NCHW (contiguous)")


def bench_torch_all(model_name, plan: Plan, *, compile=False, image_shape=CIFAR_SHAPE, variants=None,
                    log=print) -> tuple[dict, str | None]:
    """Torch variants of one model -> ({variant: record}, note on anything skipped)."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return {}, "torch is not installed (pip install torch): PyTorch reference skipped"
    device = torch_device()
    try:
        torch_model(model_name)
    except NotImplementedError as e:
        return {}, f"{e}: PyTorch reference skipped"
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
