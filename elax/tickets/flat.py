"""Trees as flat {'prefix/path/to/leaf': array} dicts and back: the tensor names of ticket files."""

import jax
import numpy as np

from elax.masks import path_str

SEP = "/"


def flatten(tree, prefix: str) -> dict:
    """{'prefix/stage1_block0/conv1/kernel': numpy array} of the leaves of `tree` (host copies)."""
    leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(tree))[0]
    return {f"{prefix}{SEP}{path_str(path)}": np.asarray(leaf) for path, leaf in leaves}


def leaf_names(tree, prefix: str) -> list[str]:
    """The names `flatten` gives the leaves of `tree` (of any kind, e.g. ShapeDtypeStructs), in tree order."""
    return [f"{prefix}{SEP}{path_str(path)}" for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def unflatten(flat: dict, prefix: str) -> dict:
    """The nested dict of the entries of `flat` under `prefix/` (the others are ignored); {} if none."""
    tree: dict = {}
    start = prefix + SEP
    for name, leaf in flat.items():
        if not name.startswith(start):
            continue
        *parents, last = name[len(start):].split(SEP)
        node = tree
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = leaf
    return tree


def masked(params, mask):
    """`params` (as numpy) with pruned weights set to exactly 0: the `masks.apply` of trees on the host, which
    compiles nothing."""
    return jax.tree.map(lambda p, m: np.where(np.asarray(m), np.asarray(p), 0).astype(np.asarray(p).dtype),
                        jax.device_get(params), jax.device_get(mask))
