"""Orbax checkpoints and atomic JSON files: everything elax writes into a workdir.

Train states are saved as plain nested dicts (`flax.serialization.to_state_dict`), so any checkpoint can be
restored with Orbax alone, without elax or the model:

    import orbax.checkpoint as ocp
    tree = ocp.StandardCheckpointer().restore("/abs/path/WORKDIR/level_03/ticket")  # params, batch_stats, mask, step
"""

import os

import flax
import jax
import orbax.checkpoint as ocp


def _manager(directory: str) -> ocp.CheckpointManager:
    # Only the latest state is needed to resume; synchronous saves keep the kill-safety argument simple
    # (Orbax writes into a temporary directory and renames it when complete).
    options = ocp.CheckpointManagerOptions(max_to_keep=1, create=True, enable_async_checkpointing=False)
    return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def latest_step(directory: str) -> int | None:
    """Step of the newest complete checkpoint in `directory`, or None."""
    if not os.path.isdir(directory):
        return None
    with _manager(directory) as manager:
        return manager.latest_step()


def save_state(directory: str, state) -> None:
    """Save a TrainState (or any flax struct) under its own step; replaces the previous one."""
    with _manager(directory) as manager:
        manager.save(int(state.step), args=ocp.args.StandardSave(flax.serialization.to_state_dict(state)),
                     force=True)
        manager.wait_until_finished()


def restore_state(directory: str, template, step: int | None = None):
    """Restore the latest (or `step`) checkpoint of `directory` into the structure of `template`."""
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"No checkpoint in {directory}: the directory does not exist.")
    target = flax.serialization.to_state_dict(template)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    with _manager(directory) as manager:
        step = manager.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"No checkpoint in {directory}.")
        restored = manager.restore(step, args=ocp.args.StandardRestore(abstract))
    return flax.serialization.from_state_dict(template, restored)


def save_tree(path: str, tree) -> None:
    """Save a pytree of arrays as one Orbax checkpoint directory (atomically; overwrites)."""
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(os.path.abspath(path), tree, force=True)
    checkpointer.wait_until_finished()


def load_tree(path: str):
    """Restore a pytree saved by `save_tree` (nested dicts of arrays), no template needed."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"No checkpoint at {path}.")
    return ocp.StandardCheckpointer().restore(os.path.abspath(path))
