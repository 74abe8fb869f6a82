"""Elastic transfer runs and baseline runs on top of tiny IMP runs (digits, width-4 ResNets)."""

import hashlib
import json
import os
import shutil

import jax
import numpy as np
import pytest

from elax import checkpoint, config as config_lib, distributions, masks, runs as runs_lib, transfer, workdir as wd
from elax.runs import BASELINES
from elax.runs.baselines import Matched
import plain_family  # noqa: F401  (registers the "plain" family)
from conftest import tiny_config

SOURCE, TARGET = "cifar_resnet_14_4", "cifar_resnet_20_4"


def quiet(_):
    pass


def imp_config(model):
    # The tiny recipe's LR schedule in one epoch (its milestone ends training): a target's runs compile the program
    # that the ETT runs on it (which take the 2-epoch source's recipe) compile, and so does a source of this recipe.
    return tiny_config(**{"model.name": model, "train.epochs": 1, "train.milestones": (1,), "lottery.levels": 2,
                          "lottery.rewind_steps": 3})


@pytest.fixture(scope="module")
def runs(tmp_path_factory, imp_run):
    """The shared IMP run of cifar_resnet_14_4 is the ETT source; a short one of cifar_resnet_20_4 the target."""
    root = tmp_path_factory.mktemp("runs")
    source, target = imp_run[0], str(root / "target")
    runs_lib.run_imp(imp_config(TARGET), target, log=quiet)
    return root, source, target


def transfer_config(source, **overrides):
    c = imp_config(TARGET)
    c.mode = "transfer"
    c.transfer.source = source
    c.transfer.levels = (2,)
    for key, value in overrides.items():
        c.transfer[key] = value
    return c


def test_ett_run_trains_the_transferred_ticket_with_its_mask_intact(runs):
    root, source, _ = runs
    workdir = str(root / "ett")
    records = runs_lib.run_transfer(transfer_config(source), workdir, log=quiet)
    (record,) = records
    assert (record["method"], record["model"], record["source_model"], record["source_level"],
            record["strategy"]) == ("ett", TARGET, SOURCE, 2, "append")
    expected = transfer.transfer_ticket(runs_lib.load_ticket(source, 2), TARGET)
    start = runs_lib.load_ticket(workdir, 2)
    jax.tree.map(np.testing.assert_array_equal, start.mask, expected.mask)
    jax.tree.map(np.testing.assert_array_equal, start.params, expected.params)
    # The source run's rewind step (5) wins over this config's (3): the ticket is the source's step-5 state.
    assert start.rewind_step == 5 and record["rewind_step"] == 5
    assert record["sparsity"] == pytest.approx(masks.sparsity(expected.mask))
    exp = runs_lib.setup(transfer_config(source))
    final = checkpoint.restore_state(os.path.join(wd.level_dir(workdir, 2), "checkpoints"), exp.template_state)
    assert int(final.step) == record["steps"] == 2 * 12  # the source's 2 epochs, not this config's 1
    jax.tree.map(np.testing.assert_array_equal, final.mask, expected.mask)
    for p, m in zip(jax.tree.leaves(final.params), jax.tree.leaves(final.mask)):
        assert np.all(np.asarray(p)[~np.asarray(m)] == 0.0)
    # Finished levels are skipped: a second call trains nothing and returns the same records.
    assert runs_lib.run_transfer(transfer_config(source), workdir, log=quiet) == records


def test_ett_control_variants_are_labelled(runs):
    root, source, _ = runs
    config = transfer_config(source, replica_masks="permute", weights="reinit")
    (record,) = runs_lib.run_transfer(config, str(root / "ett_controls"), log=quiet)
    assert record["strategy"] == "append/permuted-replica-masks/reinit"


def _copy_of_run(source, path, results, **config_changes):
    """A run directory at `path` with `source`'s config.json (changed by `config_changes`) and `results`."""
    os.makedirs(path)
    wd.write_json(os.path.join(path, wd.CONFIG_FILE), {**wd.run_config(source), **config_changes})
    if results is not None:
        wd.write_json(os.path.join(path, wd.RESULTS_FILE), results)
    return str(path)


def test_transfer_errors(runs, tmp_path):
    root, source, _ = runs
    with pytest.raises(FileNotFoundError, match="not an elax run directory"):
        runs_lib.run_transfer(transfer_config(str(tmp_path / "nothing")), str(tmp_path / "a"))
    for levels, problem in [((7,), "levels [7] are not finished"), ((0, 4, 5), "levels [4, 5] are not finished"),
                            (("abc",), "'abc' is not a level number; give whole numbers, e.g. "
                                       "transfer.levels='(1,2)'.")]:
        with pytest.raises(ValueError) as info:
            runs_lib.run_transfer(transfer_config(source, levels=levels), str(tmp_path / "b"))
        assert str(info.value).startswith(f"transfer.levels: {problem}")
    assert str(info.value).startswith("transfer.levels: ") and not os.path.exists(tmp_path / "b")
    with pytest.raises(ValueError) as info:
        runs_lib.run_transfer(transfer_config(source, levels=(7,)), str(tmp_path / "b"))
    assert str(info.value) == (f"transfer.levels: levels [7] are not finished in transfer.source {source}; "
                               "finished levels: [0, 1, 2, 3].")
    # A source killed in level 0, or another kind of run: refused before this run's workdir exists.
    unfinished = _copy_of_run(source, tmp_path / "unfinished", None)
    with pytest.raises(ValueError) as info:
        runs_lib.run_transfer(transfer_config(unfinished, levels=()), str(tmp_path / "c"))
    assert str(info.value) == (f"transfer.source {unfinished} has no finished IMP levels yet. Finish that run "
                               "first (run its command again: it resumes), then start this one.")
    ett = _copy_of_run(source, tmp_path / "ett", [], mode="transfer")
    with pytest.raises(ValueError) as info:
        runs_lib.run_transfer(transfer_config(ett, levels=()), str(tmp_path / "c"))
    assert str(info.value) == (f"transfer.source {ett} is a transfer run; its tickets come from an IMP run. Pass "
                               "the --workdir of an IMP run (of an experiment: WORKDIR/seed_<s>/imp_<model>).")
    assert not os.path.exists(tmp_path / "c")


def test_transfer_of_a_source_still_training_takes_its_finished_levels_and_says_so(runs, tmp_path):
    _, source, _ = runs
    partial = str(tmp_path / "partial")      # as if killed in level 1: level 0's record and ticket only
    shutil.copytree(source, partial, ignore=shutil.ignore_patterns("level_0[1-9]"))
    wd.write_json(os.path.join(partial, wd.RESULTS_FILE), wd.load_results(source)[:1])
    lines = []
    records = runs_lib.run_transfer(transfer_config(partial, levels=()), str(tmp_path / "ett"), log=lines.append)
    assert [r["level"] for r in records] == [0]
    assert (f"transfer.source {partial} has finished level 0 of 0-3: taking it. Run this command again once it "
            "has finished more, and the new levels are added.") in lines
    # A finished transfer needs nothing of its source: here the source's rewind state (level 0's ticket) is lost.
    shutil.rmtree(os.path.join(partial, "rewind"))
    assert runs_lib.run_transfer(transfer_config(partial, levels=(0,)), str(tmp_path / "ett"), log=quiet) == records


def test_baseline_levels_start_at_one_and_repeat_once(runs, tmp_path):
    _, _, target = runs
    c = imp_config(TARGET)
    c.mode, c.baseline.method, c.baseline.reference, c.baseline.levels = "baseline", "random", target, (0,)
    with pytest.raises(ValueError) as info:
        runs_lib.run_baseline(c, str(tmp_path / "x"))
    assert str(info.value) == ("baseline.levels: level 0 is the dense network, which baselines do not prune; "
                               "levels start at 1 (finished: [1, 2]).")
    assert runs_lib.sources.select_levels((2, 1, 1), {}, wd.load_results(target), "r", "baseline.levels",
                                          minimum=1) == [1, 2]


def test_transfer_takes_the_source_recipe(runs, tmp_path):
    """A transfer config with another dataset and schedule trains with the source run's recipe."""
    _, source, _ = runs
    config = transfer_config(source, levels=(0,))
    config.data.name, config.train.epochs, config.train.lr, config.train.milestones = "fashion_mnist", 9, 0.3, (5,)
    lines = []
    (record,) = runs_lib.run_transfer(config, str(tmp_path / "ett"), log=lines.append)
    assert record["dataset"] == "digits" and record["steps"] == 2 * 12 and record["rewind_step"] == 5
    assert lines[0] == ("Recipe of the source run: data.name='digits', train.epochs=2, train.lr=0.05, "
                        "train.milestones=(1,), lottery.rewind_steps=5")
    plan = lines.index("Plan: cifar_resnet_14_4 -> cifar_resnet_20_4 (append)")
    assert lines[plan + 1:plan + 5] == ["  stage 1: B0 B1 B1", "  stage 2: B0 B1 B1", "  stage 3: B0 B1 B1",
                                        "  mapping string: 0:0;1:1,2"]
    saved = wd.read_json(os.path.join(str(tmp_path / "ett"), "config.json"))
    assert (saved["data"]["name"], saved["train"]["epochs"], saved["train"]["lr"]) == ("digits", 2, 0.05)


def test_the_source_padding_is_inherited_and_an_older_source_gives_its_default():
    from elax.config import default_config
    from elax.runs.sources import inherit_recipe
    padded, plain = default_config().to_dict(), default_config().to_dict()
    padded["data"]["pad_to"] = 32
    del plain["data"]["pad_to"]  # a source run from before data.pad_to existed
    lines = []
    assert inherit_recipe(default_config(), padded, "source run", lines.append).data.pad_to == 32
    assert lines == ["Recipe of the source run: data.pad_to=32"]
    lines.clear()
    assert inherit_recipe(default_config(), {**plain, "seed": 1}, "reference run", lines.append).seed == 0
    assert lines == ["note: seed 0 differs from the reference run's seed 1; a report's claims pair runs by seed "
                     "(config.seed=1 pairs this run with that one)."]
    lines.clear()
    config = default_config()
    config.data.pad_to, config.train.optimizer = 36, "adamw"
    # A source from before a key existed trained with its default: the run built on it does too.
    inherited = inherit_recipe(config, plain, "source run", lines.append)
    assert (inherited.data.pad_to, inherited.train.optimizer) == (0, "sgd")
    assert lines == ["Recipe of the source run: data.pad_to=0, train.optimizer='sgd'"]
    lines.clear()
    pairs = default_config()
    pairs.lottery.layer_fractions = (("head", 0.25),)   # config.json holds [["head", 0.25]]: the same recipe
    assert inherit_recipe(pairs, json.loads(json.dumps(pairs.to_dict())), "source run", lines.append) == pairs
    assert lines == []


# The baselines' exact counts and rules do not depend on the model: on a plain MLP (tests/plain_family.py) their
# scores (SNIP's, GraSP's Hessian-gradient products, SynFlow's) compile in a fraction of a ResNet's time.
PLAIN = "plain_1-1_w32-32"


@pytest.fixture(scope="module")
def baseline_inputs(tmp_path_factory):
    """(context, dense ticket, level-2 IMP ticket, its record) of a 2-level IMP run of a plain MLP."""
    reference = str(tmp_path_factory.mktemp("plain_reference"))
    runs_lib.run_imp(imp_config(PLAIN), reference, log=quiet)
    c = imp_config(PLAIN)
    c.mode, c.baseline.reference, c.baseline.snip_batches, c.baseline.synflow_rounds = "baseline", reference, 2, 10
    exp = runs_lib.setup(c)
    record = wd.find_record(reference, 2)
    return exp, runs_lib.load_ticket(reference, 0), runs_lib.load_ticket(reference, 2), record


def test_one_shot_scores_of_the_dense_ticket_are_computed_once_per_run(baseline_inputs, monkeypatch):
    exp, dense, imp, record = baseline_inputs
    calls, real = [], runs_lib.baselines.scores.snip_scores
    monkeypatch.setattr(runs_lib.baselines.scores, "snip_scores", lambda *a, **k: calls.append(1) or real(*a, **k))
    shared = {}   # what a baseline run's levels share (baselines._Reference.dense_scores)
    _, _, sparse = BASELINES.get("snip")(exp, Matched(dense, imp, record["sparsity"], shared))
    _, _, denser = BASELINES.get("snip")(exp, Matched(dense, imp, record["sparsity"] / 2, shared))
    assert len(calls) == 1
    # The same scores, two sparsities: the sparser mask keeps a subset of the denser one's weights.
    assert all(np.all(np.asarray(d)[np.asarray(s)]) for s, d in zip(jax.tree.leaves(sparse), jax.tree.leaves(denser)))


@pytest.mark.parametrize("method", BASELINES)
def test_every_baseline_hits_the_reference_sparsity_exactly(baseline_inputs, method):
    exp, dense, imp, record = baseline_inputs
    params, batch_stats, mask = BASELINES.get(method)(exp, Matched(dense, imp, record["sparsity"]))
    masks.validate(mask, params)
    assert masks.count(mask, exp.prunable) == (record["kept_weights"], record["prunable_weights"])
    flat = jax.tree_util.tree_flatten_with_path(mask)[0]
    for path, m in flat:
        if not exp.prunable(path, m):
            assert np.all(np.asarray(m)), masks.path_str(path)
    if method in ("reinit", "random"):
        layer_counts = lambda tree: [l.kept for l in masks.layer_report(tree)]
        assert layer_counts(mask) == layer_counts(imp.mask)
    if method == "reinit":
        jax.tree.map(np.testing.assert_array_equal, mask, imp.mask)
        assert not np.array_equal(params["head"]["kernel"], dense.params["head"]["kernel"])
    elif method in ("set", "rigl"):   # from the initialisation, at ERK's layer counts
        jax.tree.map(np.testing.assert_array_equal, params, exp.init_variables(exp.config.seed)[0])
        shapes = {name: np.shape(m) for name, m in masks.prunable_leaves(mask, exp.prunable).items()}
        counts = distributions.kept_counts(shapes, record["sparsity"], "erk")
        assert {l.name: l.kept for l in masks.layer_report(mask, exp.prunable)} == counts
    else:
        jax.tree.map(np.testing.assert_array_equal, params, dense.params)
    if method == "random":
        assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(mask), jax.tree.leaves(imp.mask)))
    if method == "magnitude":
        weights = [np.abs(np.asarray(w)) for w in masks.prunable_leaves(dense.params, exp.prunable).values()]
        alive = [np.asarray(m) for m in masks.prunable_leaves(mask, exp.prunable).values()]
        kept = np.concatenate([w[m] for w, m in zip(weights, alive)])
        dropped = np.concatenate([w[~m] for w, m in zip(weights, alive)])
        assert kept.min() >= dropped.max()


def test_baseline_run_records_method_and_sparsity(runs):
    root, _, target = runs
    c = imp_config(TARGET)
    c.mode, c.baseline.method, c.baseline.reference, c.baseline.levels = "baseline", "random", target, (1,)
    (record,) = runs_lib.run_baseline(c, str(root / "random"), log=quiet)
    reference = wd.find_record(target, 1)
    assert (record["method"], record["level"], record["kept_weights"]) == ("random", 1, reference["kept_weights"])


def test_baseline_refuses_a_reference_of_another_model(runs, tmp_path):
    _, source, _ = runs
    c = imp_config(TARGET)
    c.mode, c.baseline.method, c.baseline.reference = "baseline", "snip", source
    with pytest.raises(ValueError, match="baselines prune the same model as their reference IMP run"):
        runs_lib.run_baseline(c, str(tmp_path / "x"))


def test_experiment_trains_its_runs_side_by_side_to_the_results_of_separate_runs(runs, tmp_path):
    _, _, target = runs
    c = imp_config(TARGET)
    c.mode, c.experiment.source_model, c.experiment.target_models = "experiment", SOURCE, (TARGET,)
    c.experiment.baselines, c.experiment.concurrent_runs = ("random",), 3
    lines = []
    records = runs_lib.run_experiment(c, str(tmp_path), log=lines.append)
    # The target's IMP run, trained beside the source's (and its levels beside the ETT run's), equals the same
    # run trained alone (this module's fixture), record for record.
    assert wd.load_results(str(tmp_path / f"imp_{TARGET}")) == wd.load_results(target)
    assert sorted((r["method"], r["model"], r["level"]) for r in records) == sorted(
        [("imp", SOURCE, level) for level in range(3)] + [("imp", TARGET, level) for level in range(3)]
        + [("ett", TARGET, level) for level in range(3)] + [("random", TARGET, level) for level in (1, 2)])
    assert "4 runs, up to 3 at once (experiment.concurrent_runs)" in lines
    assert os.path.isfile(tmp_path / "report" / "report.md")

    # Seeds added later: the runs above become their seed's, moved (the same files), not trained again.
    made = wd.runs_inside(str(tmp_path))
    metrics = {run: os.stat(tmp_path / run / "level_01" / "metrics.jsonl").st_ino for run in made}
    c.experiment.seeds, lines = (c.seed,), []
    assert runs_lib.run_experiment(c, str(tmp_path), log=lines.append) == records
    destination = tmp_path / f"seed_{c.seed}"
    assert wd.runs_inside(str(tmp_path)) == [f"seed_{c.seed}/{run}" for run in made]
    assert {run: os.stat(destination / run / "level_01" / "metrics.jsonl").st_ino for run in made} == metrics
    assert (f"Moved {', '.join(made)} (runs made without experiment.seeds, seed {c.seed}) into {destination}: they "
            "are that seed's runs.") in lines


def test_runs_of_one_model_and_recipe_share_one_compilation(runs):
    """The target's IMP levels and the baseline runs on it (this module's) train with one Trainer, compiled once."""
    _, _, target = runs
    imp = imp_config(TARGET)
    baseline = imp_config(TARGET)
    baseline.mode, baseline.baseline.method, baseline.baseline.reference = "baseline", "snip", target
    trainer = runs_lib.setup(imp).trainer
    assert runs_lib.setup(baseline).trainer is trainer
    step = trainer._run_steps if trainer.runs_fused else trainer._one_step
    assert step._cache_size() == 1 and trainer._evaluate._cache_size() == 1


def test_a_ticket_on_data_with_other_classes_is_refused_with_the_cause():
    from types import SimpleNamespace
    from elax.runs.sources import check_same_classes
    ticket = SimpleNamespace(model=SimpleNamespace(num_classes=10))
    data = SimpleNamespace(name="imagefolder", dir="/data/eleven")
    ctx = SimpleNamespace(num_classes=11, config=SimpleNamespace(data=data))
    with pytest.raises(ValueError) as info:
        check_same_classes(ticket, ctx, "transfer.source runs/r18")
    assert str(info.value) == ("transfer.source runs/r18 was trained on 10 classes, this run's data (imagefolder in "
                               "/data/eleven) has 11: a ticket keeps its classifier. Train on the source's data "
                               "(config.data.dir), with the same classes.")
    ctx.num_classes = 10
    check_same_classes(ticket, ctx, "transfer.source runs/r18")   # same classes: no error


def test_a_ticket_of_another_model_does_not_train(runs, tmp_path):
    _, source, _ = runs
    ctx = runs_lib.setup(imp_config(TARGET))
    ticket = runs_lib.load_ticket(source, 1)      # of cifar_resnet_14_4; the context trains cifar_resnet_20_4
    with pytest.raises(TypeError, match=r"level must be a whole number \(0 = the dense network\), not '1'\."):
        runs_lib.train_ticket(ctx, str(tmp_path / "w"), "1", lambda: ticket, "foreign", log=quiet)
    with pytest.raises(ValueError) as info:
        runs_lib.train_ticket(ctx, str(tmp_path / "w"), 1, lambda: ticket, "foreign", log=quiet)
    assert str(info.value) == (f"The ticket is of {SOURCE}, but this run trains {TARGET}: their parameters differ. "
                               f"Transfer it first (elax.transfer.transfer_ticket(ticket, '{TARGET}')), or set up "
                               f"the run for {SOURCE}.")


def test_a_ticket_that_starts_where_the_schedule_ends_does_not_train(runs, tmp_path):
    import dataclasses
    _, _, target = runs
    ctx = runs_lib.setup(imp_config(TARGET))
    ticket = dataclasses.replace(runs_lib.load_ticket(target, 1), rewind_step=ctx.total_steps)
    with pytest.raises(ValueError) as info:   # it recorded the untrained ticket's accuracy as a trained level's
        runs_lib.train_ticket(ctx, str(tmp_path / "w"), 1, lambda: ticket, "late", log=quiet)
    assert str(info.value) == (
        f"The ticket starts at step {ctx.total_steps} (its rewind step), but this run's schedule ends at step "
        f"{ctx.total_steps} ({ctx.config.train.epochs} epochs of {ctx.trainer.steps_per_epoch} steps): it would "
        "train nothing. Set up the run with more epochs (config.train.epochs), or give the ticket an earlier rewind "
        "step.")
    assert not os.path.exists(tmp_path / "w" / "level_01" / "ticket")


def test_another_transfer_setting_gets_a_folder_of_its_own(tmp_path):
    from elax.runs.experiment import ett_run_name
    transfer = config_lib.default_config().transfer
    assert ett_run_name(str(tmp_path), "a", "b", transfer) == "ett_a_to_b"       # nothing there yet
    wd.write_json(str(tmp_path / "ett_a_to_b" / wd.CONFIG_FILE), {"transfer": transfer.to_dict()})
    assert ett_run_name(str(tmp_path), "a", "b", transfer) == "ett_a_to_b"       # the same setting resumes there
    transfer.strategy = "interpolate"
    assert ett_run_name(str(tmp_path), "a", "b", transfer) == "ett_a_to_b_interpolate"
    transfer.strategy, transfer.weights = "append", "reinit"
    assert ett_run_name(str(tmp_path), "a", "b", transfer) == "ett_a_to_b_append-reinit"
    transfer.strategy, transfer.weights = "0:0;1:1,2", "source"
    assert ett_run_name(str(tmp_path), "a", "b", transfer) == "ett_a_to_b_mapping-" + hashlib.sha1(
        b"0:0;1:1,2").hexdigest()[:8]


def test_single_seed_runs_of_another_recipe_stay_where_they_are(tmp_path):
    from elax.runs.experiment import _adopt_single_seed_runs
    config = {**imp_config(TARGET).to_dict(), "workdir": str(tmp_path / "imp_a")}
    wd.write_json(str(tmp_path / "imp_a" / wd.CONFIG_FILE), {**config, "recipe_id": "other"})
    lines = []
    _adopt_single_seed_runs(str(tmp_path), (config["seed"],), wd.recipe_id(config), lines.append)
    assert wd.runs_inside(str(tmp_path)) == ["imp_a"]
    assert lines == [f"Not used: imp_a (runs made without experiment.seeds). With seeds, each seed's runs live in "
                     f"seed_<s>/; `python -m elax.report {tmp_path}/seed_*` reports them without those."]


def test_an_experiment_without_seeds_over_seed_folders_is_refused(tmp_path):
    from elax.runs.experiment import _refuse_seedless_run_over_seed_folders
    _refuse_seedless_run_over_seed_folders(str(tmp_path), 0)   # nothing there: fine
    for seed in (0, 2):
        wd.write_json(str(tmp_path / f"seed_{seed}" / "imp_a" / wd.CONFIG_FILE), {"seed": seed})
    (tmp_path / "seed_5").mkdir()   # no runs in it
    with pytest.raises(ValueError) as info:
        _refuse_seedless_run_over_seed_folders(str(tmp_path), 0)
    assert str(info.value) == (f"{tmp_path} holds the runs of seeds 0,2 (seed_<s>/), and this command gives no "
                               "experiment.seeds: it would train seed 0's runs again outside them. Pass "
                               "config.experiment.seeds='(0,2)' to resume or report them (add seeds to extend).")
