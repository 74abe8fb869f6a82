"""Stacked runs: K tickets of one model and recipe trained in one program (a leading run axis) equal K separate
runs to float tolerance, each with its own seed's data order and augmentation; baseline levels stack by
`train.stack` and a killed stack resumes."""

import dataclasses

import jax
import numpy as np
import pytest

import toy_family  # noqa: F401  (registers "toy": dense layers with BatchNorm, which compile in a second)
from conftest import TINY_SHAPE, tiny_config
from elax import checkpoint, data, masks, optim, pruning, runs, train, workdir as wd
from elax.models import get_model, init_variables


def test_stacked_steps_equal_separate_runs_with_their_own_seeds(tiny_dataset):
    model = get_model("toy_1-1_w16-16")
    mesh = train.make_mesh()
    source = data.put_on_devices(tiny_dataset, mesh)
    trainer = train.Trainer(model, optim.sgd(0.9, 5e-4), optim.multistep(0.1, 5), mesh,
                            batch_size=16, steps_per_epoch=5, seed=0, augment=True)
    seeds = (0, 1)
    states = []
    for seed in seeds:   # different inits and masks, as baselines or replicates have
        v = init_variables(model, jax.random.key(seed), TINY_SHAPE)
        mask = pruning.random_prune(masks.build(v["params"]), 0.5, jax.random.key(10 + seed))
        states.append(train.create_state(v["params"], v["batch_stats"], mask, trainer.tx, step=2))
    stacked, sums = trainer.train_steps_stacked(train.stack(states), seeds, source, 3)   # steps 2..4
    assert sums["count"].tolist() == [48.0, 48.0]
    for seed, state, got, loss in zip(seeds, states, train.unstack(stacked, 2), sums["loss"]):
        alone = dataclasses.replace(trainer, seed=seed)
        expected, expected_sums = alone.train_steps(state, source, 3)
        assert int(got.step) == int(expected.step) == 5
        assert float(loss) == pytest.approx(float(expected_sums["loss"]), rel=1e-5)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), got.params,
                     expected.params)
        jax.tree.map(np.testing.assert_array_equal, got.mask, expected.mask)
        pruned = jax.tree.map(lambda p, m: np.all(np.asarray(p)[~np.asarray(m)] == 0), got.params, got.mask)
        assert all(jax.tree.leaves(pruned))   # pruned weights stay exactly zero in the stack too


# Dense layers with BatchNorm (tests/toy_family.py): stacking's batch statistics, without compiling convolutions.
TOY = {"model.name": "toy_1-1_w16-16"}


def _baseline_config(reference, stack):
    return tiny_config(**TOY, **{"mode": "baseline", "baseline.method": "magnitude", "baseline.reference": reference,
                                 "train.stack": stack})


def test_baseline_levels_stacked_equal_separate_and_a_killed_stack_resumes(tmp_path, monkeypatch):
    reference = str(tmp_path / "imp")
    runs.run_imp(tiny_config(**TOY), reference, log=lambda _: None)   # 3 levels for the baselines to match
    separate = runs.run_baseline(_baseline_config(reference, 1), str(tmp_path / "separate"), log=lambda _: None)
    stacked = runs.run_baseline(_baseline_config(reference, 3), str(tmp_path / "stacked"), log=lambda _: None)
    assert [r["level"] for r in stacked] == [1, 2, 3]
    for a, b in zip(stacked, separate):
        assert {k: v for k, v in a.items() if not k.startswith("test_")} == {
            k: v for k, v in b.items() if not k.startswith("test_")}
        assert a["test_loss"] == pytest.approx(b["test_loss"], rel=1e-3)
        assert abs(a["test_accuracy"] - b["test_accuracy"]) <= 1 / 360 + 1e-9   # at most one test image
    # One epoch saved by all three levels and one more by the first, then killed: the stack resumes from the
    # step all three saved and ends as the uninterrupted stack did.
    saves, real_save = {"n": 0}, checkpoint.save_state

    def dying_save(directory, state):
        real_save(directory, state)
        saves["n"] += 1
        if saves["n"] == 4:
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save_state", dying_save)
    workdir = str(tmp_path / "killed")
    with pytest.raises(KeyboardInterrupt):
        runs.run_baseline(_baseline_config(reference, 3), workdir, log=lambda _: None)
    assert wd.load_results(workdir) == []
    monkeypatch.setattr(checkpoint, "save_state", real_save)
    assert runs.run_baseline(_baseline_config(reference, 3), workdir, log=lambda _: None) == stacked
