"""Orbax checkpoints and atomic JSON files: everything elax writes into a workdir.

Train states are saved as plain nested dicts (`flax.serialization.to_state_dict`), so any checkpoint can be
restored with Orbax alone, without elax or the model:

    import orbax.checkpoint as ocp
    tree = ocp.StandardCheckpointer().restore("/abs/path/WORKDIR/level_03/ticket")  # params, batch_stats, mask, step
"""

import collections
import errno
import functools
import os
import shutil
import threading

import flax
import jax
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


class DiskFull(OSError):
    """The disk cannot hold the checkpoint about to be written; the message names the path and the way out."""


class DamagedCheckpoint(ValueError):
    """A checkpoint that exists but cannot be restored (truncated, corrupted); the message says the way out."""


# -- what this process wrote or read last, kept to skip reading it again -------------------------------------------
# A run reads back what it has just written (the ticket it trains, the previous level's final state, the rewind
# state every level starts from), and an Orbax read has a fixed cost whatever the size. An entry is used only while its
# directory's files are exactly as they were (names, sizes, modification times, inodes), so a changed, damaged or
# deleted checkpoint is read from disk again. Small trees only; off in multi-process runs (every process must
# take part in each Orbax read there).
_RECENT: collections.OrderedDict = collections.OrderedDict()
_RECENT_MAX_BYTES = 256 << 20

# Orbax's checkpointers coordinate through process-wide signals on which two threads saving at once deadlock (seen
# with an experiment's runs side by side, runs.jobs), so this module calls Orbax, and keeps _RECENT, one thread
# at a time.
_ONE_AT_A_TIME = threading.RLock()


def _one_at_a_time(fn):
    @functools.wraps(fn)
    def serialized(*args, **kwargs):
        with _ONE_AT_A_TIME:
            return fn(*args, **kwargs)
    return serialized


def _files_signature(path: str):
    out = []
    for root, _, files in os.walk(path):
        for name in files:
            st = os.stat(os.path.join(root, name))
            out.append((os.path.relpath(os.path.join(root, name), path), st.st_size, st.st_mtime_ns, st.st_ino))
    return tuple(sorted(out))


def _remember(path: str, host_tree) -> None:
    size = _nbytes(host_tree)
    if jax.process_count() > 1 or size > _RECENT_MAX_BYTES:
        return
    path = os.path.abspath(path)
    _RECENT[path] = (_files_signature(path), host_tree, size)
    _RECENT.move_to_end(path)
    while sum(entry[2] for entry in _RECENT.values()) > _RECENT_MAX_BYTES:
        _RECENT.popitem(last=False)


def _nbytes(tree) -> int:
    return sum(int(getattr(leaf, "nbytes", 8)) for leaf in jax.tree.leaves(tree))


def _recalled(path: str):
    """The tree last saved to or read from `path` if its files are unchanged, else None."""
    signature, tree, _ = _RECENT.get(os.path.abspath(path), (None, None, 0))
    if tree is None or not os.path.isdir(path) or signature != _files_signature(path):
        return None
    return _new_containers(tree)


def _new_containers(tree):
    # Callers may add keys to what they get (load_ticket does); the kept tree must not change.
    return jax.tree.map(lambda leaf: leaf, tree)


def _manager(directory: str) -> ocp.CheckpointManager:
    # The two latest states: if a kill or a full disk damaged the newest, the older one still resumes the level.
    # Synchronous saves keep the kill-safety argument simple (Orbax writes into a temporary directory and renames
    # it when complete).
    options = ocp.CheckpointManagerOptions(max_to_keep=2, create=True, enable_async_checkpointing=False)
    return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def _summary(error: Exception) -> str:
    """One line of an Orbax/TensorStore error, which can run to hundreds of lines."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:200]}" + ("..." if len(text) > 200 else "")


@_one_at_a_time
def latest_step(directory: str) -> int | None:
    """Step of the newest complete checkpoint in `directory`, or None."""
    if not os.path.isdir(directory):
        return None
    with _manager(directory) as manager:
        return manager.latest_step()


@_one_at_a_time
def all_steps(directory: str) -> list[int]:
    """Steps of the complete checkpoints in `directory`, ascending ([] if none)."""
    if not os.path.isdir(directory):
        return []
    with _manager(directory) as manager:
        return sorted(manager.all_steps())


def remove_after(directory: str, step: int) -> None:
    """Delete the checkpoints of `directory` newer than `step` (a resume from `step` saves them again)."""
    _remove_steps(directory, [s for s in all_steps(directory) if s > step])


def _remove_steps(directory: str, steps) -> None:
    """Delete these steps' checkpoints (process 0 of a multi-process run alone deletes)."""
    if jax.process_index() == 0:
        for step in steps:
            shutil.rmtree(os.path.join(os.path.abspath(directory), str(step)), ignore_errors=True)


def remove_unfinished(*directories: str) -> list[str]:
    """Delete the unfinished saves (Orbax's `*.orbax-checkpoint-tmp*`) that a kill during a save left in these
    directories, which Orbax would otherwise warn about when it saves there again; returns their names. Every
    save here calls it first: saves run one at a time, so any such folder is a dead one."""
    import glob
    found = sorted(path for directory in directories
                   for path in glob.glob(os.path.join(glob.escape(directory), "*.orbax-checkpoint-tmp*")))
    if jax.process_index() == 0:
        for path in found:
            shutil.rmtree(path, ignore_errors=True)
    return [os.path.basename(path) for path in found]


def check_space(directory: str, tree) -> None:
    """OSError (no space left) before writing `tree` into `directory` if its disk cannot hold it: Orbax would
    fail half-way, from its writer threads, with hundreds of lines of tracebacks."""
    need = _nbytes(tree) + (1 << 18)  # + metadata
    parent = os.path.abspath(directory)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    free = shutil.disk_usage(parent).free
    if free < need:
        raise DiskFull(errno.ENOSPC, f"No space left on the disk of {directory} ({free / 2**20:.1f} MiB free, a "
                      f"checkpoint needs {need / 2**20:.1f} MiB). Free space and run the same command; finished "
                      "levels are kept")


@_one_at_a_time
def save_state(directory: str, state) -> None:
    """Save a TrainState (or any flax struct) under its own step; the oldest beyond two is removed."""
    remove_unfinished(directory)
    with _manager(directory) as manager:
        # Host arrays, as in save_tree: Orbax would otherwise slice every replicated leaf per device (one small
        # compilation per leaf shape and device).
        tree = jax.device_get(flax.serialization.to_state_dict(state))
        check_space(directory, tree)
        manager.save(int(state.step), args=ocp.args.StandardSave(tree), force=True)
        manager.wait_until_finished()
    _remember(os.path.join(directory, str(int(state.step))), tree)


@_one_at_a_time
def restore_state(directory: str, template, step: int | None = None, log=None):
    """Restore the latest (or `step`) checkpoint of `directory` into the structure of `template`.

    If the latest cannot be restored, the one before it is (said through `log`); DamagedCheckpoint if none can.
    """
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"No checkpoint in {directory}: the directory does not exist.")
    target = flax.serialization.to_state_dict(template)
    # Restored replicated over every device (of every process): the layout training uses.
    replicated = NamedSharding(Mesh(jax.devices(), ("data",)), P())
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), target)
    with _manager(directory) as manager:
        steps = [step] if step is not None else sorted(manager.all_steps(), reverse=True)
        if not steps:
            raise FileNotFoundError(f"No checkpoint in {directory}.")
        problems = []
        for candidate in steps:
            recalled = _recalled(os.path.join(directory, str(candidate)))
            if recalled is not None:
                return flax.serialization.from_state_dict(template, jax.device_put(recalled, replicated))
            try:
                restored = manager.restore(candidate, args=ocp.args.StandardRestore(abstract))
            except Exception as e:  # Orbax raises many types for damaged files: all mean "cannot restore"
                problems.append(f"step {candidate}: {_summary(e)}")
                continue
            if problems:
                # Newer steps are unusable, and a save under their step number would fail: remove them.
                _remove_steps(directory, steps[:steps.index(candidate)])
                if log:
                    log(f"The checkpoint {problems[0]} in {directory} is damaged (removed); resuming from step "
                        f"{candidate}.")
            return flax.serialization.from_state_dict(template, restored)
    raise DamagedCheckpoint(f"No checkpoint in {directory} can be restored ({'; '.join(problems)}). Delete "
                            f"{directory} to train that level again from its ticket.")


@_one_at_a_time
def save_tree(path: str, tree) -> None:
    """Save a pytree of arrays as one Orbax checkpoint directory (atomically; overwrites).

    Saved as host (numpy) arrays: they restore the same way whatever devices wrote them, and in a multi-process
    run process 0 writes them (they are replicated) while the others join Orbax's barriers.
    """
    tree = jax.device_get(tree)
    check_space(path, tree)
    remove_unfinished(os.path.dirname(os.path.abspath(path)))
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(os.path.abspath(path), tree, force=True)
    checkpointer.wait_until_finished()
    _remember(path, tree)


@_one_at_a_time
def load_tree(path: str, fix: str = ""):
    """Restore a pytree saved by `save_tree` (nested dicts of arrays), no template needed.

    DamagedCheckpoint (one line, naming `path`, then `fix`: what to do about it) if it cannot be restored.
    """
    if not os.path.isdir(path):
        raise FileNotFoundError(f"No checkpoint at {path}." + (f" {fix}" if fix else ""))
    recalled = _recalled(path)
    if recalled is not None:
        return recalled
    try:
        tree = ocp.StandardCheckpointer().restore(os.path.abspath(path))
    except Exception as e:  # Orbax raises many types for damaged files: all mean "cannot restore"
        raise DamagedCheckpoint(f"{path} is damaged and cannot be restored ({_summary(e)})."
                                + (f" {fix}" if fix else "")) from None
    tree = jax.device_get(tree)
    _remember(path, tree)
    return _new_containers(tree)


@_one_at_a_time
def load_latest_state_tree(directory: str):
    """The newest restorable train state of a CheckpointManager `directory` as a plain tree (no template)."""
    with _manager(directory) as manager:
        steps = sorted(manager.all_steps(), reverse=True)
    for step in steps:
        try:
            return load_tree(os.path.join(directory, str(step), "default"))
        except DamagedCheckpoint:
            continue
    raise DamagedCheckpoint(f"No checkpoint in {directory} can be restored.")
