"""elax masks in the shape jaxpruner keeps them, and back, without depending on jaxpruner.

jaxpruner (google-research/jaxpruner) holds masks in `SparseState.masks` (jaxpruner/base_updater.py at commit
2f5b8647543d3ec522f3445b7877efb0847c839f): a tree shaped like the params whose leaf is `None` for a parameter it
does not prune and a `uint8` array of 1 (kept) and 0 (pruned) otherwise (`MASK_DTYPE = 'uint8'` in
jaxpruner/mask_calculator.py at 14f976266e5ceed3b8701df3b5faa2ec7e036a90). elax's masks are bool everywhere, all
True where nothing is pruned. `to_jaxpruner` and `from_jaxpruner` convert between the two; packed (bit) masks
(`use_packed_masks`) are not read.
"""

import flax
import jax
import jax.numpy as jnp
import numpy as np

from elax import masks as masks_lib


def to_jaxpruner(mask, prunable: masks_lib.Predicate = masks_lib.default_prunable) -> dict:
    """`mask` as `SparseState.masks`: uint8 arrays for the `prunable` leaves, None for the others."""
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(mask))
    return flax.traverse_util.unflatten_dict({
        path: np.asarray(leaf, np.uint8) if prunable(_key_path(path), leaf) else None for path, leaf in flat.items()})


def from_jaxpruner(masks, params) -> dict:
    """The elax mask of `params` from jaxpruner's masks (a `SparseState`, or its `.masks` tree): None leaves are
    all True; ValueError when the trees do not match or a mask holds values other than 0 and 1."""
    masks = getattr(masks, "masks", masks)
    theirs = flax.traverse_util.flatten_dict(flax.core.unfreeze(masks), keep_empty_nodes=True)
    ours = flax.traverse_util.flatten_dict(flax.core.unfreeze(params))
    if set(theirs) != set(ours):
        differ = sorted(set(theirs) ^ set(ours))[0]
        raise ValueError(f"The jaxpruner masks do not fit the params: {'/'.join(map(str, differ))!r} is in one "
                         "tree only. Pass the masks of these params (SparseState.masks).")
    out = {}
    for path, param in ours.items():
        leaf = theirs[path]
        if leaf is None:
            out[path] = jnp.ones(np.shape(param), bool)
            continue
        values = np.asarray(leaf)
        if values.shape != np.shape(param) or not np.isin(values, (0, 1)).all():
            raise ValueError(f"jaxpruner mask {'/'.join(map(str, path))!r} is not a 0/1 array of shape "
                             f"{np.shape(param)} (got {values.dtype} {values.shape}; packed masks are not read).")
        out[path] = jnp.asarray(values.astype(bool))
    return flax.traverse_util.unflatten_dict(out)


def _key_path(path: tuple) -> tuple:
    """A flattened dict path as the jax key path a `Predicate` reads."""
    return tuple(jax.tree_util.DictKey(key) for key in path)
