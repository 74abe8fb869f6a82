"""Tests for elax.checkpoint: Orbax train-state round trips, retention, template-free trees, atomic JSON."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from elax import checkpoint, masks, optim, pruning, train


def assert_trees_identical(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b)):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape, jax.tree_util.keystr(path)
        np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))


@pytest.fixture(scope="module")
def states(resnet8_variables):
    """(saved, template): a pruned state at step 7 with live momentum, and a differently valued template."""
    params, batch_stats = resnet8_variables["params"], resnet8_variables["batch_stats"]
    tx = optim.sgd(0.9, 1e-4)
    mask = pruning.prune_magnitude(params, masks.build(params), 0.5)
    state = train.create_state(params, batch_stats, mask, tx, step=7)
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.25), params)
    _, opt_state = tx.update(grads, state.opt_state, state.params)
    stats = jax.tree.map(lambda s: s + 0.5, batch_stats)
    saved = state.replace(opt_state=opt_state, batch_stats=stats)
    template = train.create_state(jax.tree.map(jnp.zeros_like, params), batch_stats, masks.build(params), tx)
    return saved, template


def step_dirs(directory):
    return sorted(name for name in os.listdir(directory) if name.isdigit())


def test_state_round_trip(tmp_path, states):
    saved, template = states
    directory = str(tmp_path / "ckpt")
    checkpoint.save_state(directory, saved)
    restored = checkpoint.restore_state(directory, template)
    assert isinstance(restored, train.TrainState)
    assert int(restored.step) == 7
    assert_trees_identical(restored.params, saved.params)
    assert_trees_identical(restored.batch_stats, saved.batch_stats)
    assert_trees_identical(restored.mask, saved.mask)
    assert all(np.asarray(m).dtype == np.bool_ for m in jax.tree.leaves(restored.mask))
    assert masks.count(restored.mask) == masks.count(saved.mask) == (2518, 5036)
    # opt_state keeps optax's namedtuples: (add_decayed_weights: EmptyState, trace: TraceState).
    assert type(restored.opt_state) is tuple and len(restored.opt_state) == 2
    assert isinstance(restored.opt_state[0], optax.EmptyState)
    assert isinstance(restored.opt_state[1], optax.TraceState)
    assert_trees_identical(restored.opt_state, saved.opt_state)
    assert float(jnp.abs(restored.opt_state[1].trace["head"]["kernel"]).max()) > 0


def test_latest_step_and_max_to_keep_two(tmp_path, states):
    saved, template = states
    directory = str(tmp_path / "ckpt")
    assert checkpoint.latest_step(directory) is None        # does not exist yet
    checkpoint.save_state(directory, saved)
    assert checkpoint.latest_step(directory) == 7
    later = saved.replace(step=jnp.asarray(12, jnp.int32), params=jax.tree.map(lambda p: p * 2, saved.params))
    checkpoint.save_state(directory, later)
    assert checkpoint.latest_step(directory) == 12
    assert step_dirs(directory) == ["12", "7"]
    checkpoint.save_state(directory, later.replace(step=jnp.asarray(15, jnp.int32)))
    assert step_dirs(directory) == ["12", "15"]                # the two newest are kept
    restored = checkpoint.restore_state(directory, template, step=12)
    assert int(restored.step) == 12
    assert_trees_identical(restored.params, later.params)
    assert int(checkpoint.restore_state(directory, template).step) == 15


def test_restore_from_empty_dir_raises(tmp_path, states):
    _, template = states
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError):
        checkpoint.restore_state(str(empty), template)
    assert checkpoint.latest_step(str(empty)) is None
    with pytest.raises(FileNotFoundError):
        checkpoint.restore_state(str(tmp_path / "missing"), template)


def test_tree_round_trip_without_template(tmp_path):
    rng = np.random.default_rng(0)
    tree = {"params": {"conv": {"kernel": rng.standard_normal((3, 3, 2, 4)).astype(np.float32)},
                       "head": {"bias": np.zeros(3, np.float32)}},
            "mask": {"conv": {"kernel": rng.random((3, 3, 2, 4)) < 0.5}},
            "step": np.asarray(1000, np.int32)}
    path = str(tmp_path / "ticket")
    checkpoint.save_tree(path, tree)
    loaded = checkpoint.load_tree(path)
    assert_trees_identical(loaded, tree)
    tree2 = jax.tree.map(lambda x: ~x if x.dtype == bool else x + 1, tree)
    checkpoint.save_tree(path, tree2)                       # overwrites
    assert_trees_identical(checkpoint.load_tree(path), tree2)
    with pytest.raises(FileNotFoundError):
        checkpoint.load_tree(str(tmp_path / "nothing"))


def test_reads_of_what_was_just_written_come_from_memory_until_the_files_change(tmp_path, monkeypatch):
    tree = {"params": {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}, "step": np.asarray(7, np.int32)}
    path = str(tmp_path / "ticket")
    checkpoint.save_tree(path, tree)
    disk_reads = []
    real_restore = checkpoint.ocp.StandardCheckpointer.restore
    monkeypatch.setattr(checkpoint.ocp.StandardCheckpointer, "restore",
                        lambda self, *a, **k: disk_reads.append(a) or real_restore(self, *a, **k))
    first = checkpoint.load_tree(path)
    assert_trees_identical(first, tree)
    assert disk_reads == []
    first["extra"] = 1                                      # a caller adding keys changes nothing kept
    assert "extra" not in checkpoint.load_tree(path) and disk_reads == []
    # A damaged file (same size, other bytes) is a changed file: read from disk, and refused.
    data_file = max((os.path.join(root, name) for root, _, names in os.walk(path) for name in names),
                    key=os.path.getsize)
    size = os.path.getsize(data_file)
    with open(data_file, "r+b") as f:
        f.write(b"\xff" * size)
    with pytest.raises(checkpoint.DamagedCheckpoint):
        checkpoint.load_tree(path)
    assert len(disk_reads) == 1


def test_unfinished_saves_that_a_kill_left_are_removed(tmp_path, states, caplog):
    import orbax.checkpoint as ocp
    saved, _ = states
    warning = "Removing existing directory since it is not finalized"   # Orbax's, on a resumed run's output

    def leave_unfinished(level):
        directory = level / "checkpoints"
        checkpoint.save_state(str(directory), saved)
        for unfinished in (directory / "12.orbax-checkpoint-tmp", level / "ticket.orbax-checkpoint-tmp-1764"):
            unfinished.mkdir()
            (unfinished / "partial").write_bytes(b"\0")
        return directory

    level = tmp_path / "direct" / "level_01"
    directory = leave_unfinished(level)
    assert checkpoint.remove_unfinished(str(level), str(directory)) == [
        "12.orbax-checkpoint-tmp", "ticket.orbax-checkpoint-tmp-1764"]
    assert sorted(os.listdir(level)) == ["checkpoints"] and step_dirs(directory) == ["7"]

    # Every save removes them first: a train state's (stacked runs' too) and a ticket's.
    level = tmp_path / "saves" / "level_01"
    directory = leave_unfinished(level)
    caplog.clear()
    checkpoint.save_state(str(directory), saved.replace(step=jnp.asarray(12, jnp.int32)))
    checkpoint.save_tree(str(level / "ticket"), {"w": np.zeros(3, np.float32)})
    assert sorted(os.listdir(level)) == ["checkpoints", "ticket"] and step_dirs(directory) == ["12", "7"]
    assert not [name for name in os.listdir(directory) if "tmp" in name] and warning not in caplog.text
    # Orbax on its own warns.
    (directory / "15.orbax-checkpoint-tmp").mkdir()
    with checkpoint._manager(str(directory)) as manager:
        manager.save(15, args=ocp.args.StandardSave({"w": np.zeros(3, np.float32)}), force=True)
        manager.wait_until_finished()
    assert warning in caplog.text
