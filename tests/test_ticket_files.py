"""elax.tickets: one ticket file (save -> load is the identity; damaged, foreign and newer files are one-line errors),
PyTorch state dicts under the reference names (round trip; logits where torch is installed), OpenLTH level
directories, a run's ticket exported from the command line, an experiment's published with a table and measured
again, and a ticket trained by hand joining a report.

Tickets are random (shapes from a traced init, nothing compiled) except those of the shared tiny IMP run."""

import gzip
import json
import os
import pathlib
import re
import sys

import jax
import numpy as np
import pytest

from elax import checkpoint, masks, report, runs, transfer, workdir as wd
from elax.models import family_of, get_model, variable_shapes
from elax.ticket import Ticket
from elax import tickets
from elax.tickets import cli, files, openlth, pytorch
from elax.tickets.flat import flatten

from conftest import ROOT, tiny_config

# One model of each family with PyTorch names (tiny widths), and one without BatchNorm.
FAMILIES = ["cifar_resnet_8_4", "cifar_vgg_11_4", "imagenet_resnet_18_4", "imagenet_resnet_50_4"]
NO_BATCH_NORM = "mlp_16_8"

# elax path -> (PyTorch name, PyTorch shape), written from OpenLTH's and torchvision's modules.
NAMES = {
    "cifar_resnet_8_4": {
        "params/stem_conv/kernel": ("conv.weight", (4, 3, 3, 3)),
        "params/stem_bn/scale": ("bn.weight", (4,)),
        "batch_stats/stem_bn/mean": ("bn.running_mean", (4,)),
        "params/stage1_block0/conv1/kernel": ("blocks.0.conv1.weight", (4, 4, 3, 3)),
        "params/stage2_block0/conv1/kernel": ("blocks.1.conv1.weight", (8, 4, 3, 3)),
        "params/stage2_block0/shortcut_conv/kernel": ("blocks.1.shortcut.0.weight", (8, 4, 1, 1)),
        "params/stage3_block0/shortcut_bn/bias": ("blocks.2.shortcut.1.bias", (16,)),
        "batch_stats/stage3_block0/shortcut_bn/var": ("blocks.2.shortcut.1.running_var", (16,)),
        "params/head/kernel": ("fc.weight", (10, 16)),
        "params/head/bias": ("fc.bias", (10,)),
    },
    "cifar_vgg_11_4": {   # OpenLTH's `layers` counts its max-pools: 4 M 8 M 16 16 M 32 32 M 32 32
        "params/stage1_block0/conv/kernel": ("layers.0.conv.weight", (4, 3, 3, 3)),
        "params/stage1_block0/conv/bias": ("layers.0.conv.bias", (4,)),
        "params/stage2_block0/conv/kernel": ("layers.2.conv.weight", (8, 4, 3, 3)),
        "params/stage3_block1/bn/scale": ("layers.5.bn.weight", (16,)),
        "batch_stats/stage4_block0/bn/mean": ("layers.7.bn.running_mean", (32,)),
        "params/stage5_block1/conv/kernel": ("layers.11.conv.weight", (32, 32, 3, 3)),
        "params/head/kernel": ("fc.weight", (10, 32)),
    },
    "imagenet_resnet_18_4": {
        "params/stem_conv/kernel": ("conv1.weight", (4, 3, 7, 7)),
        "params/stem_bn/bias": ("bn1.bias", (4,)),
        "params/stage1_block1/conv2/kernel": ("layer1.1.conv2.weight", (4, 4, 3, 3)),
        "params/stage2_block0/downsample_conv/kernel": ("layer2.0.downsample.0.weight", (8, 4, 1, 1)),
        "batch_stats/stage4_block0/downsample_bn/var": ("layer4.0.downsample.1.running_var", (32,)),
        "params/head/kernel": ("fc.weight", (10, 32)),
    },
    "imagenet_resnet_50_4": {
        "params/stem_conv/kernel": ("conv1.weight", (4, 3, 7, 7)),
        "params/stage1_block0/conv3/kernel": ("layer1.0.conv3.weight", (16, 4, 1, 1)),
        "params/stage1_block0/downsample_conv/kernel": ("layer1.0.downsample.0.weight", (16, 4, 1, 1)),
        "params/stage3_block5/bn3/scale": ("layer3.5.bn3.weight", (64,)),
        "params/head/kernel": ("fc.weight", (10, 128)),
    },
}
# The PyTorch modules of each: (class in docs/tickets.md, its arguments).
TORCH_MODULES = {"cifar_resnet_8_4": ("CifarResNet", (8, 4, 10)), "cifar_vgg_11_4": ("CifarVGG", (11, 4, 10)),
                 "imagenet_resnet_18_4": ("ImageNetResNet", (18, 4, 10)),
                 "imagenet_resnet_50_4": ("ImageNetResNet", (50, 4, 10))}


def random_ticket(name, *, seed=0, level=2, rewind_step=5, meta=None) -> Ticket:
    """A ticket of `name` with random weights, BatchNorm statistics and mask (~60% of prunable weights kept)."""
    model = get_model(name)
    family = family_of(model)
    shapes = variable_shapes(model, family.input_shape)
    rng = np.random.default_rng(seed)
    params = jax.tree.map(lambda s: (0.3 * rng.standard_normal(s.shape)).astype(np.float32), shapes["params"])
    mask = jax.tree_util.tree_map_with_path(
        lambda path, p: rng.random(p.shape) < 0.6 if family.prunable(path, p) else np.ones(p.shape, bool), params)
    batch_stats = jax.tree_util.tree_map_with_path(
        lambda path, s: (0.1 * rng.standard_normal(s.shape) if path[-1].key == "mean"
                         else 1 + 0.5 * rng.random(s.shape)).astype(np.float32), shapes.get("batch_stats", {}))
    return Ticket(model, name, mask, files.masked(params, mask), batch_stats, level=level, rewind_step=rewind_step,
                  meta=meta or {})


def assert_same_trees(a, b):
    flat_a, flat_b = (jax.tree_util.tree_flatten_with_path(t)[0] for t in (a, b))
    assert [masks.path_str(p) for p, _ in flat_a] == [masks.path_str(p) for p, _ in flat_b]
    for (path, x), (_, y) in zip(flat_a, flat_b):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and np.array_equal(x, y), masks.path_str(path)


def assert_same_ticket(a: Ticket, b: Ticket):
    assert (a.model_name, a.level, a.rewind_step, a.model) == (b.model_name, b.level, b.rewind_step, b.model)
    for tree_a, tree_b in ((a.params, b.params), (a.mask, b.mask), (a.batch_stats, b.batch_stats)):
        assert_same_trees(tree_a, tree_b)


def assert_one_line(error, path):
    message = str(error.value)
    assert "\n" not in message and str(path) in message, message


def assert_each_fails_to_load(tmp_path, cases: dict, suffix: str):
    """{case: (bytes, words)}: each written to CASE + suffix, loading it is a one-line ValueError matching words."""
    for case, (content, words) in cases.items():
        path = tmp_path / f"{case}{suffix}"
        path.write_bytes(content)
        with pytest.raises(ValueError, match=words) as error:
            tickets.load(str(path))
        assert_one_line(error, path)


# -- the ticket file -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", FAMILIES + [NO_BATCH_NORM])
def test_save_then_load_is_the_identity(name, tmp_path):
    ticket = random_ticket(name, meta={"recipe": {"train.lr": 0.1}, "recipe_id": "abc", "workdir": "runs/x",
                                       "note": [1, "two"], "not_json": object()})
    trained = random_ticket(name, seed=1)
    result = {"test_accuracy": 0.75, "test_loss": 0.5, "seed": 3, "dataset": "digits", "method": "imp", "steps": 40}
    path = files.save(ticket, str(tmp_path / "t.safetensors"), trained_params=trained.params,
                      trained_batch_stats=trained.batch_stats, result=result)
    loaded = tickets.load(path)
    assert isinstance(loaded, Ticket) and loaded.sparsity == ticket.sparsity
    assert_same_ticket(loaded, ticket)
    assert_same_trees(tickets.load_trained(path), {"params": trained.params, "batch_stats": trained.batch_stats})
    meta = loaded.meta
    assert {k: meta[k] for k in ("model", "family", "level", "rewind_step", "format_version", "elax_version")} == {
        "model": name, "family": family_of(name).name, "level": 2, "rewind_step": 5,
        "format_version": tickets.FORMAT_VERSION, "elax_version": __import__("elax").__version__}
    assert meta["sparsity"] == pytest.approx(ticket.sparsity) and meta["trained"] is True
    assert (meta["recipe"], meta["recipe_id"], meta["run"], meta["note"]) == (
        {"train.lr": 0.1}, "abc", os.path.realpath("runs/x"), [1, "two"])
    assert {k: meta[k] for k in result if k != "steps"} == {k: v for k, v in result.items() if k != "steps"}
    assert meta["trained_steps"] == 40 and "not_json" not in meta
    assert {k: v for k, v in tickets.info(path).items() if k != "tensors"} == meta
    if name == NO_BATCH_NORM:
        assert loaded.batch_stats == {} and "batch_stats" not in tickets.info(path)["tensors"]
    # Saved again, a loaded ticket gives the same file.
    again = files.save(loaded, str(tmp_path / "again.safetensors"), trained_params=trained.params,
                       trained_batch_stats=trained.batch_stats)
    assert pathlib.Path(again).read_bytes() == pathlib.Path(path).read_bytes()


def test_pruned_weights_are_saved_as_zeros(tmp_path):
    ticket = random_ticket("cifar_resnet_8_4")
    unmasked = jax.tree.map(lambda p: p + 1, ticket.params)   # a ticket whose pruned weights are not 0
    loaded = tickets.load(files.save(Ticket(ticket.model, ticket.model_name, ticket.mask, unmasked,
                                            ticket.batch_stats), str(tmp_path / "t.safetensors")))
    assert_same_trees(loaded.params, files.masked(unmasked, ticket.mask))


def test_a_gz_path_is_the_same_file_gzipped_and_its_damage_is_one_line(tmp_path):
    ticket, trained = random_ticket("cifar_resnet_8_4"), random_ticket("cifar_resnet_8_4", seed=1)
    plain, packed = (files.save(ticket, str(tmp_path / name), trained_params=trained.params,
                                trained_batch_stats=trained.batch_stats, result={"test_accuracy": 0.5})
                     for name in ("t.safetensors", "t.safetensors.gz"))
    assert gzip.decompress(pathlib.Path(packed).read_bytes()) == pathlib.Path(plain).read_bytes()
    assert_same_ticket(tickets.load(packed), ticket)
    assert_same_trees(tickets.load_trained(packed), tickets.load_trained(plain))
    assert tickets.info(packed) == tickets.info(plain)
    data = pathlib.Path(packed).read_bytes()
    foreign = gzip.compress(pathlib.Path(_rewrite(plain, str(tmp_path / "f.safetensors"), elax=None)).read_bytes())
    cases = {"truncated": (data[:-100], "damaged"), "not_gzip": (pathlib.Path(plain).read_bytes(), "damaged"),
             "garbage": (gzip.compress(b"not a ticket at all"), "damaged"), "foreign": (foreign, "not an elax ticket")}
    assert_each_fails_to_load(tmp_path, cases, ".safetensors.gz")


def _rewrite(path, out, **meta_changes):
    """`path` written again to `out` with its elax metadata changed (or removed, given elax=None)."""
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file
    with safe_open(path, framework="numpy") as f:
        meta = json.loads(f.metadata()["elax"])
    meta.update(meta_changes)
    save_file(load_file(path), out, metadata=None if "elax" in meta_changes else {"elax": json.dumps(meta)})
    return out


def test_damaged_foreign_and_newer_files_are_one_line_errors(tmp_path):
    good = files.save(random_ticket("cifar_resnet_8_4"), str(tmp_path / "good.safetensors"))
    data = pathlib.Path(good).read_bytes()
    with pytest.raises(FileNotFoundError) as error:
        tickets.load(str(tmp_path / "missing.safetensors"))
    assert_one_line(error, tmp_path / "missing.safetensors")
    cases = {"truncated": (data[:-100], "damaged"), "garbage": (b"not a ticket at all", "damaged"),
             "flipped": (data[:-1] + bytes([data[-1] ^ 1]), "digest")}
    assert_each_fails_to_load(tmp_path, cases, ".safetensors")
    foreign = _rewrite(good, str(tmp_path / "foreign.safetensors"), elax=None)
    newer = _rewrite(good, str(tmp_path / "newer.safetensors"), format_version=tickets.FORMAT_VERSION + 1)
    unknown = _rewrite(good, str(tmp_path / "unknown.safetensors"), model="cifar_resnet_9")
    for path, words in ((foreign, "not an elax ticket"), (newer, f"format version {tickets.FORMAT_VERSION + 1}"),
                        (unknown, "does not know")):
        with pytest.raises(ValueError, match=words) as error:
            tickets.load(path)
        assert_one_line(error, path)
    with pytest.raises(ValueError, match="no trained weights") as error:
        tickets.load_trained(good)
    assert_one_line(error, good)


# -- PyTorch names ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", FAMILIES)
def test_torch_names_and_layouts_and_the_round_trip(name):
    ticket = random_ticket(name)
    table = tickets.name_table(name)
    state, mask = tickets.state_dict(ticket.model, ticket.params, ticket.batch_stats, 5), tickets.mask_dict(
        ticket.model, ticket.mask)
    flat = {**flatten(ticket.params, "params"), **flatten(ticket.batch_stats, "batch_stats")}
    for path, (torch_name, shape) in NAMES[name].items():
        assert table[path] == torch_name and state[torch_name].shape == shape, path
        layout = {4: (3, 2, 0, 1), 2: (1, 0)}.get(flat[path].ndim, (0,)) if path.endswith("kernel") else (0,)
        assert np.array_equal(state[torch_name], flat[path].transpose(layout) if len(layout) > 1 else flat[path])
    batch_norms = {n.rsplit(".", 1)[0] for n in state if n.endswith("running_mean")}
    assert set(state) == set(table.values()) | {f"{bn}.num_batches_tracked" for bn in batch_norms}
    assert all(state[f"{bn}.num_batches_tracked"] == 5 for bn in batch_norms)
    prunable = {table["params/" + p] for p in masks.prunable_leaves(ticket.params, family_of(name).prunable)}
    assert set(mask) == prunable and all(m.dtype == bool for m in mask.values())   # OpenLTH's mask.pth keys
    back = tickets.ticket_from_torch(state, mask, name, level=ticket.level, rewind_step=ticket.rewind_step)
    assert_same_ticket(back, ticket)


def test_torch_arrays_of_another_model_are_refused():
    ticket = random_ticket("cifar_resnet_8_4")
    state, mask = (tickets.state_dict(ticket.model, ticket.params, ticket.batch_stats),
                   tickets.mask_dict(ticket.model, ticket.mask))
    without_bias = {k: v for k, v in state.items() if k != "fc.bias"}
    for arrays, other, words in ((state, "cifar_resnet_14_4", "is not a parameter of cifar_resnet_14_4"),
                                 (state, "cifar_resnet_8_8", "do not fit"), (state, "cifar_vgg_11_4", "is not a"),
                                 (without_bias, "cifar_resnet_8_4", "lacks 'fc.bias'")):
        with pytest.raises(ValueError, match=re.escape(words)) as error:
            tickets.ticket_from_torch(arrays, mask, other)
        assert "\n" not in str(error.value)


def _torch_modules():
    """The PyTorch modules of docs/tickets.md (its first block that defines them) and its usage block."""
    text = pathlib.Path(ROOT, "docs", "tickets.md").read_text()
    code = re.findall(r"^```python no-run\n(.*?)^```", text, re.M | re.S)
    classes = next(block for block in code if "class CifarResNet" in block)
    usage = next(block for block in code if "load_file(\"r20_torch/state_dict.safetensors\")" in block)
    namespace = {}
    exec(compile(classes, "docs/tickets.md", "exec"), namespace)
    return namespace, usage


@pytest.mark.parametrize("name", FAMILIES)
def test_the_pytorch_export_gives_elax_logits(name, tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file
    ticket = random_ticket(name)
    state_path, mask_path = tickets.save_torch(ticket, str(tmp_path))
    modules, _ = _torch_modules()
    cls, args = TORCH_MODULES[name]
    model = modules[cls](*args)
    model.load_state_dict(load_file(state_path))   # strict: the same names and shapes
    model.eval()
    mask = load_file(mask_path)
    assert all(torch.equal(p * mask[n], p) for n, p in model.named_parameters() if n in mask)
    images = np.random.default_rng(1).standard_normal((4, 32, 32, 3), dtype=np.float32)
    with torch.no_grad():
        logits = model(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
    expected = jax.jit(lambda v, x: ticket.model.apply(v, x, train=False))(
        {"params": ticket.params, "batch_stats": ticket.batch_stats}, images)
    np.testing.assert_allclose(logits, np.asarray(expected), rtol=1e-4, atol=1e-5)


def test_the_documented_pytorch_snippet_runs(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.chdir(tmp_path)
    ticket = random_ticket("cifar_resnet_20")
    files.save(ticket, "r20.safetensors")
    assert cli.main(["torch", "r20.safetensors", "r20_torch"]) == 0
    modules, usage = _torch_modules()
    exec(compile(usage, "docs/tickets.md", "exec"), modules)


# -- OpenLTH ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["cifar_resnet_8_4", "imagenet_resnet_18_4"])
def test_openlth_arrays_import(name):
    ticket = random_ticket(name, level=3, rewind_step=7)
    state = tickets.state_dict(ticket.model, ticket.params, ticket.batch_stats)
    mask = {k: v.astype(np.int32) for k, v in tickets.mask_dict(ticket.model, ticket.mask).items()}  # as mask.pth
    if name.startswith("imagenet"):   # OpenLTH wraps torchvision's ResNet in `model`
        state, mask = ({f"model.{k}": v for k, v in d.items()} for d in (state, mask))
    imported = tickets.from_openlth_arrays(state, mask, name, level=3, rewind_step=7)
    assert_same_ticket(imported, ticket)
    assert imported.meta["source"] == "openlth"


def test_an_openlth_level_directory_imports(tmp_path):
    torch = pytest.importorskip("torch")
    ticket = random_ticket("cifar_resnet_8_4", level=3, rewind_step=7)
    level_dir = tmp_path / "lottery_x" / "replicate_1" / "level_3" / "main"
    level_dir.mkdir(parents=True)
    as_torch = lambda arrays: {k: torch.from_numpy(np.asarray(v)) for k, v in arrays.items()}   # noqa: E731
    torch.save(as_torch(tickets.state_dict(ticket.model, ticket.params, ticket.batch_stats, 7)),
               level_dir / "model_ep0_it7.pth")
    trained = random_ticket("cifar_resnet_8_4", seed=1)
    torch.save(as_torch(tickets.state_dict(ticket.model, trained.params, trained.batch_stats)),
               level_dir / "model_ep2_it0.pth")
    torch.save({k: v.int() for k, v in as_torch(tickets.mask_dict(ticket.model, ticket.mask)).items()},
               level_dir / "mask.pth")
    imported = tickets.from_openlth(str(level_dir), "cifar_resnet_8_4")
    assert_same_ticket(imported, ticket)
    assert imported.meta["source_weights"] == "model_ep0_it7.pth"
    later = tickets.from_openlth(str(level_dir), "cifar_resnet_8_4", weights="model_ep2_it0.pth",
                                 iterations_per_epoch=10)
    assert later.rewind_step == 20 and later.level == 3
    with pytest.raises(ValueError, match="iterations_per_epoch"):
        tickets.from_openlth(str(level_dir), "cifar_resnet_8_4", weights="model_ep2_it0.pth")
    assert cli.main(["openlth", str(level_dir), "cifar_resnet_8_4", str(tmp_path / "t.safetensors")]) == 0
    assert_same_ticket(tickets.load(str(tmp_path / "t.safetensors")), ticket)


def test_openlth_without_torch_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)   # import torch now fails, as where it is not installed
    with pytest.raises(ImportError, match="from_openlth_arrays") as error:
        tickets.from_openlth(str(tmp_path), "cifar_resnet_8_4")
    assert_one_line(error, tmp_path)
    assert openlth._level(str(tmp_path / "level_12" / "main")) == 12


# -- runs: export, the command line, transfer, training and the report ----------------------------------------------

def test_export_a_run_from_the_command_line(imp_run, tmp_path, capsys):
    run, records = imp_run
    out = str(tmp_path / "level1.safetensors")
    assert cli.main(["export", run, "--level", "1", out, "--trained"]) == 0
    assert "level 1, sparsity" in capsys.readouterr().out
    loaded, original = tickets.load(out), runs.load_ticket(run, 1)
    assert_same_ticket(loaded, original)
    config, record = wd.run_config(run), wd.find_record(run, 1)
    assert (loaded.meta["recipe_id"], loaded.meta["recipe"], loaded.meta["run"]) == (
        config["recipe_id"], wd.recipe(config), os.path.realpath(run))
    assert (loaded.meta["test_accuracy"], loaded.meta["method"], loaded.meta["seed"]) == (
        record["test_accuracy"], "imp", config["seed"])
    final = checkpoint.load_latest_state_tree(wd.checkpoints_dir(run, 1))
    assert_same_trees(tickets.load_trained(out), {"params": final["params"], "batch_stats": final["batch_stats"]})
    assert cli.main(["info", out, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["level"] == 1
    assert cli.main(["torch", out, str(tmp_path / "torch")]) == 0
    assert sorted(os.listdir(tmp_path / "torch")) == [pytorch.MASK_FILE, pytorch.STATE_FILE,
                                                      pytorch.TRAINED_STATE_FILE]
    # A loaded ticket moves like the run's own.
    assert_same_trees(transfer.transfer_ticket(loaded, "cifar_resnet_20_4").mask,
                      transfer.transfer_ticket(original, "cifar_resnet_20_4").mask)


def test_command_line_errors_are_one_line(imp_run, tmp_path, capsys):
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(b"\x00" * 64)
    for argv in (["info", str(damaged)], ["export", str(tmp_path / "no_run"), "--level", "1", "x.safetensors"],
                 ["export", imp_run[0], "--level", "9", str(tmp_path / "x.safetensors")]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("elax: error: ") and err.count("\n") == 1, err


def test_a_ticket_trained_by_hand_joins_the_report(imp_run, tmp_path):
    run, _ = imp_run
    ticket = tickets.load(tickets.export(run, 2, str(tmp_path / "level2.safetensors")))
    ctx = runs.setup(tiny_config())   # the IMP run's recipe
    hand = str(tmp_path / "hand")
    state, test = runs.train_ticket(ctx, hand, 2, lambda: ticket, "by hand", log=lambda _: None)
    # Trained the same way from the same ticket, it ends where the IMP level did (up to one image on another CPU).
    imp_record = wd.find_record(run, 2)
    assert abs(test["accuracy"] - imp_record["test_accuracy"]) <= 1 / 300
    entry = tickets.record(hand, ticket, test["accuracy"], test_loss=test["loss"], config=ctx.config,
                           steps=int(state.step))
    assert entry["recipe_id"] == imp_record["recipe_id"] and entry["sparsity"] == pytest.approx(
        imp_record["sparsity"])
    table = report.summarize(report.load_records([run, hand]))
    assert "hand (cifar_resnet_14_4)" in table.series
    assert table.get("hand (cifar_resnet_14_4)", imp_record["sparsity"]).mean == test["accuracy"]
    assert_same_ticket(runs.load_ticket(hand, 2), ticket)
    # Without a config, the recipe the ticket file carries.
    other = str(tmp_path / "other")
    assert tickets.record(other, ticket, 0.5, method="mine")["recipe_id"] == imp_record["recipe_id"]
    assert report.load_records([run, other])


def test_record_refuses_what_would_mislead_a_report(tmp_path):
    ticket = random_ticket("cifar_resnet_8_4", meta={"recipe_id": "abc", "seed": 0})
    with pytest.raises(ValueError, match="fraction"):
        tickets.record(str(tmp_path / "a"), ticket, 97.5)
    with pytest.raises(ValueError, match="source_model"):
        tickets.record(str(tmp_path / "a"), ticket, 0.9, method="ett")
    wd.write_json(str(tmp_path / "imp" / wd.CONFIG_FILE), {"mode": "imp", "model": {"name": "cifar_resnet_8_4"}})
    with pytest.raises(ValueError, match="mode 'imp'"):
        tickets.record(str(tmp_path / "imp"), ticket, 0.9)
    tickets.record(str(tmp_path / "a"), ticket, 0.9)
    with pytest.raises(ValueError, match="another recipe_id"):
        tickets.record(str(tmp_path / "a"), random_ticket("cifar_resnet_8_4", meta={"recipe_id": "xyz"}), 0.9)


def test_config_of_a_ticket_without_a_recipe_is_refused_and_with_one_is_its_runs():
    with pytest.raises(ValueError) as info:
        tickets.config_of(random_ticket("cifar_resnet_8_4", meta={"seed": 3}))
    assert str(info.value) == ("this ticket of cifar_resnet_8_4 carries no recipe (it was not exported from a run): "
                               "build its config by hand (elax.config.default_config()).")
    config = tickets.config_of(random_ticket("mlp_2x16", meta={
        "seed": 3, "dataset": "digits", "recipe": {"train.lr": 0.5, "lottery.layer_fractions": [["head", 0.1]]}}))
    assert (config.mode, config.model.name, config.seed, config.data.name, config.train.lr,
            config.lottery.layer_fractions) == ("imp", "mlp_2x16", 3, "digits", 0.5, (("head", 0.1),))


def test_evaluate_reads_the_data_where_data_dir_says(tmp_path, capsys):
    ticket = random_ticket("cifar_resnet_8_4", meta={"seed": 0, "dataset": "imagefolder",
                                                     "recipe": {"data.image_size": 32, "data.resize_size": 32}})
    path = files.save(ticket, str(tmp_path / "t.safetensors.gz"), trained_params=ticket.params,
                      trained_batch_stats=ticket.batch_stats)
    elsewhere = tmp_path / "jpegs"   # a folder's place is not part of the recipe: the file cannot know it
    with pytest.raises(FileNotFoundError, match=f"data dir '{elsewhere}' does not exist"):
        tickets.evaluate(path, data_dir=str(elsewhere))
    assert cli.main(["evaluate", path, "--data-dir", str(elsewhere)]) == 2
    assert f"data dir '{elsewhere}' does not exist" in capsys.readouterr().err


def test_publish_writes_every_level_and_a_table_and_evaluate_measures_it_again(imp_run, tmp_path, capsys):
    run, records = imp_run
    experiment = tmp_path / "experiment"
    (experiment / "seed_0").mkdir(parents=True)
    os.symlink(run, experiment / "seed_0" / "imp_cifar_resnet_14_4")   # an experiment's layout around the run
    out = tmp_path / "published"
    assert cli.main(["publish", str(experiment), str(out), "--title", "Tiny tickets"]) == 0
    assert capsys.readouterr().out.endswith(f"wrote {len(records)} tickets and {out / 'tickets.md'}\n")
    table = (out / "tickets.md").read_text().splitlines()
    assert table[0] == "# Tiny tickets"
    rows = [line for line in table if line.startswith("| `")]
    assert len(rows) == len(records) == 4
    for record, row in zip(records, rows):
        name = f"seed_0/imp_cifar_resnet_14_4/level_{record['level']:02d}.safetensors.gz"
        path = out / name
        assert row.startswith(f"| `{name}` | cifar_resnet_14_4 | imp | {record['level']} | "
                              f"{100 * record['sparsity']:.2f} | {100 * record['test_accuracy']:.2f} |")
        meta = tickets.info(str(path))
        assert (meta["run"], meta["trained"], meta["test_accuracy"]) == (
            "seed_0/imp_cifar_resnet_14_4", True, record["test_accuracy"])
    sparsest = str(out / "seed_0" / "imp_cifar_resnet_14_4" / "level_03.safetensors.gz")
    measured = tickets.evaluate(sparsest)
    assert measured["accuracy"] == pytest.approx(records[3]["test_accuracy"], abs=1e-6)
    assert measured["loss"] == pytest.approx(records[3]["test_loss"], rel=1e-4)
    assert cli.main(["evaluate", sparsest]) == 0
    accuracy = f"{records[3]['test_accuracy']:.2%}"
    printed = capsys.readouterr().out
    assert printed.startswith(f"test accuracy {accuracy} (loss ") and printed.endswith(f"recorded: {accuracy}\n")
    # Trained again from the file alone, with the recipe it carries: the same result as the run's.
    ticket = tickets.load(sparsest)
    config = tickets.config_of(ticket)
    assert wd.recipe(config.to_dict()) == wd.recipe(wd.run_config(run)) and config.model.name == "cifar_resnet_14_4"
    _, test = runs.train_ticket(runs.setup(config), str(tmp_path / "again"), 3, lambda: ticket, "again",
                                log=lambda _: None)
    assert test["accuracy"] == records[3]["test_accuracy"]
    assert cli.main(["publish", str(experiment), str(tmp_path / "none"), "--seed", "1"]) == 2
    assert "holds no finished imp or ett run of seed 1" in capsys.readouterr().err


def test_publish_puts_runs_of_several_workdirs_in_one_table_and_refuses_a_name_twice(imp_run, tmp_path, capsys):
    run, records = imp_run
    experiment, beside = tmp_path / "experiment", tmp_path / "beside"
    for workdir, name in ((experiment, "imp_cifar_resnet_14_4"), (beside, "imp_again")):
        (workdir / "seed_0").mkdir(parents=True)
        os.symlink(run, workdir / "seed_0" / name)
    out = tmp_path / "published"
    assert cli.main(["publish", str(experiment), str(beside), str(out)]) == 0
    table = (out / "tickets.md").read_text().splitlines()
    assert table[0] == "# Tickets of seed 0 of experiment and beside"
    files = [line.split("`")[1] for line in table if line.startswith("| `")]
    assert files == [f"seed_0/{name}/level_{r['level']:02d}.safetensors.gz"
                     for name in ("imp_cifar_resnet_14_4", "imp_again") for r in records]
    assert tickets.info(str(out / files[-1]))["run"] == "seed_0/imp_again"
    capsys.readouterr()
    assert cli.main(["publish", str(experiment), str(experiment), str(tmp_path / "twice")]) == 2
    assert capsys.readouterr().err == (
        f"elax: error: two runs would be published as seed_0/imp_cifar_resnet_14_4: {experiment}/seed_0/"
        f"imp_cifar_resnet_14_4 and {experiment}/seed_0/imp_cifar_resnet_14_4; publish them into different "
        "folders, or rename one run's folder.\n")
    assert not (tmp_path / "twice").exists()
