"""Smoke test of benchmarks/throughput.py (every variant runs, the JSON has its keys; no speed assertions) and the
arithmetic of benchmarks/stacked.py's projection."""

import importlib.util
import json
import os
import pathlib

import jax
import pytest

from elax.models import family_of, variable_shapes


def _load(name):
    # benchmarks/ is not an installed package: load the script by path so any working directory works.
    path = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"elax_benchmark_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


throughput = _load("throughput")   # also puts benchmarks/ on sys.path, where its sibling modules import from
import bench_elax  # noqa: E402
import bench_floors  # noqa: E402
import bench_report  # noqa: E402
import bench_torch  # noqa: E402

TINY_SHAPE = (8, 8, 3)


def test_benchmark_runs_and_writes_json(tmp_path):
    import toy_family  # noqa: F401  (registers the "toy" family: any family runs, and a toy compiles in a second)
    out = tmp_path / "results.json"
    args = throughput.parse_args(["--models", "toy_1-1_w64-64", "--batch-size", "16", "--steps", "2",
                                  "--warmup", "1", "--repeats", "2", "--epoch-images", "32",
                                  "--epoch-repeats", "1", "--matmul-size", "64", "--copy-mib", "1",
                                  "--skip-other-path", "--out", str(out)])   # on CPU: the slow-to-compile loop
    result = throughput.run(args, image_shape=TINY_SHAPE, log=lambda *a: None)
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))

    meta = result["metadata"]
    for key in ("date", "backend", "device_kind", "jax", "flax", "torch", "batch_size", "steps", "repeats",
                "epoch_images"):
        assert key in meta
    assert (meta["batch_size"], meta["steps"], meta["epoch_images"]) == (16, 2, 32)
    assert meta["xla_flags"] == os.environ.get("XLA_FLAGS", "")

    entry = result["models"]["toy_1-1_w64-64"]
    # Every row on Trainer's path for this backend; the epoch on the other path is skipped.
    default = "fused" if jax.default_backend() != "cpu" else "per-step"
    forced = {"elax_epoch_fused_masked_fp32", "elax_epoch_per_step_masked_fp32"}
    assert meta["trainer_path"] == default
    elax_rows = {name for name in entry["results"] if name.startswith("elax")}
    assert elax_rows == set(bench_elax.ELAX_VARIANTS) - forced
    has_torch = False   # the toy family has no PyTorch reference: its torch rows are skipped with a note
    assert "torch_eager_fp32" not in entry["results"]
    if importlib.util.find_spec("torch") is not None:
        assert entry["torch_note"] == "no PyTorch reference of the 'toy' family: PyTorch reference skipped"
    for name, r in entry["results"].items():
        assert r["images_per_s"] > 0 and all(t > 0 for t in r["times_s"]), name
        assert (r["ratio_vs_torch"] > 0) if has_torch else r["ratio_vs_torch"] is None
        if name in elax_rows:
            assert r["compilations"] == 1, name                                  # nothing recompiles
            assert r["path"] == default and r["ratio_vs_dense"] > 0, name
    assert entry["results"]["elax_epoch_masked_fp32"]["steps"] == 2          # 32 images / batch 16
    assert entry["results"]["elax_step_dense_fp32"]["ratio_vs_dense"] == pytest.approx(1.0)
    assert 0.78 < entry["ticket"]["sparsity"] < 0.80
    assert set(entry["targets"]) >= {"step_masked_fp32_vs_torch", "step_masked_vs_dense_fp32",
                                     "epoch_vs_step_fp32", "step_bf16_vs_fp32"}
    assert all(v > 0 for v in result["device_rates"].values())
    assert all(v > 0 for v in entry["floors"].values())
    assert entry["costs"]["train_flops_per_image"] == 3 * entry["costs"]["forward_flops_per_image"] > 0
    assert "toy_1-1_w64-64" in bench_report.format_table("toy_1-1_w64-64", entry, meta)


@pytest.mark.parametrize("name, low, high", [
    ("cifar_resnet_20", 40e6, 42e6),          # 40.8M per 32x32 image
    ("cifar_resnet_56", 125e6, 128e6),        # 125.7M
    ("cifar_vgg_16", 313e6, 314e6),           # 313.5M
    ("imagenet_resnet_18", 1.81e9, 1.83e9),   # 1.82G per 224x224 image (torchvision: 1.81 GFLOPS, i.e. MACs)
    ("imagenet_resnet_50", 4.08e9, 4.13e9),   # 4.09G (torchvision: 4.09)
])
def test_model_costs_match_known_macs(name, low, high):
    model = bench_elax.build(name)
    costs = bench_floors.model_costs(model, family_of(name).input_shape)
    assert low < costs["macs_per_image"] < high


@pytest.mark.parametrize("name", ["cifar_resnet_20", "cifar_vgg_16_8", "imagenet_resnet_18_8", "imagenet_resnet_50_8"])
def test_torch_reference_matches_elax_parameter_count(name):
    torch = pytest.importorskip("torch")
    model = bench_torch.torch_model(name)
    shape = family_of(name).input_shape
    params = variable_shapes(bench_elax.build(name), shape)["params"]
    assert sum(p.numel() for p in model.parameters()) == sum(p.size for p in jax.tree.leaves(params))
    out = model.eval()(torch.zeros(2, shape[2], *shape[:2]))
    assert tuple(out.shape) == (2, bench_elax.num_classes(name))


def test_elth_cifar_projection_counts_its_trainings():
    stacked = _load("stacked")
    trainings = stacked.elth_cifar_trainings()
    # IMP 16 levels on 20, 32, 56; per target ETT 16 levels and 6 baselines x 15 levels.
    assert trainings["cifar_resnet_20"] == {"sequential": 16, "stackable": 0}
    assert trainings["cifar_resnet_56"] == {"sequential": 16, "stackable": 16 + 90}
    assert sum(c["sequential"] + c["stackable"] for c in trainings.values()) == 260
    one_second = {m: {1: 1.0, 8: 2.0} for m in trainings}   # a stack of 8 takes twice one run's epoch
    assert stacked.project_hours(trainings, 160, one_second, 1) == pytest.approx(260 * 160 / 3600)
    assert stacked.project_hours(trainings, 160, one_second, 8) == pytest.approx(
        (48 * 160 + 2 * 14 * 160 * 2.0) / 3600)   # ceil(106 / 8) = 14 stacks per target
