"""Tickets as PyTorch state dicts under the reference implementations' names (`elax.tickets.names`), and back.

Layouts: a conv kernel is HWIO in Flax and OIHW (out, in, h, w) in PyTorch; a dense kernel (in, out) and
(out, in). The mask dict holds the family's prunable weights (OpenLTH's `mask.pth` keys: its `PrunedModel` refuses
others) and any other leaf that has a pruned entry, under the state dict's names; a leaf it lacks is kept whole.
Everything here is numpy: writing needs safetensors, not torch.
"""

import os

import numpy as np
from safetensors.numpy import save_file

from elax import masks as masks_lib, models
from elax.ticket import Ticket
from elax.tickets import names as names_lib
from elax.tickets.flat import SEP, flatten, masked, unflatten

STATE_FILE = "state_dict.safetensors"
TRAINED_STATE_FILE = "trained_state_dict.safetensors"
MASK_FILE = "mask.safetensors"
NUM_BATCHES_TRACKED = "num_batches_tracked"


# Kernel axes by ndim: (elax -> PyTorch, PyTorch -> elax); conv HWIO <-> OIHW, dense (in, out) <-> (out, in).
_KERNEL_AXES = {4: ((3, 2, 0, 1), (2, 3, 1, 0)), 2: ((1, 0), (1, 0))}


def to_torch(array: np.ndarray, name: str) -> np.ndarray:
    """An elax leaf (`name` its path) in PyTorch's layout."""
    return _transposed(array, name, 0)


def from_torch(array: np.ndarray, name: str) -> np.ndarray:
    """A PyTorch tensor (as numpy) in the layout of the elax leaf at `name`."""
    return _transposed(array, name, 1)


def _transposed(array: np.ndarray, name: str, direction: int) -> np.ndarray:
    axes = _KERNEL_AXES.get(array.ndim) if name.endswith(SEP + "kernel") else None
    return np.ascontiguousarray(array.transpose(axes[direction]) if axes else array)


def state_dict(model, params, batch_stats, steps: int = 0) -> dict[str, np.ndarray]:
    """The PyTorch state dict (numpy arrays) of elax variables; `steps` fills BatchNorm's num_batches_tracked (the
    updates the statistics saw; PyTorch reads it only for a BatchNorm without momentum, and these have 0.1)."""
    table = names_lib.name_table(model)
    flat = {**flatten(params, "params"), **flatten(batch_stats, "batch_stats")}
    out = {table[name]: to_torch(array, name) for name, array in flat.items()}
    out.update({f"{bn}.{NUM_BATCHES_TRACKED}": np.array(steps, np.int64)
                for bn in names_lib.batch_norm_modules(table)})
    return out


def mask_dict(model, mask) -> dict[str, np.ndarray]:
    """The mask (bool arrays) of the prunable weights, and of any other leaf with a pruned entry, by PyTorch name."""
    table = names_lib.name_table(model)
    prunable = set(masks_lib.prunable_leaves(mask, models.family_of(model).prunable))
    return {table[name]: to_torch(m, name) for name, m in flatten(mask, "params").items()
            if name[len("params" + SEP):] in prunable or not m.all()}


def ticket_from_torch(state: dict, mask: dict, model_name: str, *, level: int = 0, rewind_step: int = 0,
                      meta: dict | None = None) -> Ticket:
    """The elax Ticket of a PyTorch state dict and mask dict (numpy arrays under the reference names, e.g. read
    with safetensors.numpy.load_file); pruned weights are set to 0. ValueError naming a missing, unknown or
    misshapen entry."""
    model = models.get_model(model_name)
    table = names_lib.name_table(model)
    by_torch = {torch_name: name for name, torch_name in table.items()}
    state = {k: np.asarray(v) for k, v in state.items() if not k.endswith("." + NUM_BATCHES_TRACKED)}
    _check_names(state, mask, by_torch, table, model_name)
    flat = {name: from_torch(state[torch_name], name) for name, torch_name in table.items()}
    params, batch_stats = unflatten(flat, "params"), unflatten(flat, "batch_stats")
    family = models.family_of(model)
    model = models.get_model(model_name, num_classes=family.num_classes_of(params))
    _check_shapes(model, params, batch_stats, model_name)
    kept = {by_torch[k]: from_torch(np.asarray(v) != 0, by_torch[k]) for k, v in mask.items()}
    mask_tree = unflatten({name: kept.get(name, np.ones(a.shape, bool)) for name, a in flat.items()
                           if name.startswith("params" + SEP)}, "params")
    masks_lib.validate(mask_tree, params)
    params = masked(params, mask_tree)
    return Ticket(model=model, model_name=model_name, mask=mask_tree, params=params, batch_stats=batch_stats,
                  level=level, rewind_step=rewind_step, meta=dict(meta or {}))


def _check_names(state: dict, mask: dict, by_torch: dict, table: dict, model_name: str) -> None:
    reference = names_lib.reference(model_name)
    unknown = [k for k in state if k not in by_torch]
    unknown += [k for k in mask if not by_torch.get(k, "").startswith("params" + SEP)]   # masks are of weights
    if unknown:
        example = next((t for name, t in table.items() if "block0" in name and name.endswith("kernel")),
                       next(iter(by_torch)))
        raise ValueError(f"{unknown[0]!r} is not a parameter of {model_name} under {reference} names (they read "
                         f"like {example!r}): was it saved from another model?")
    missing = [torch_name for torch_name in table.values() if torch_name not in state]
    if missing:
        raise ValueError(f"the state dict lacks {missing[0]!r} ({len(missing)} of the {len(table)} entries of "
                         f"{model_name} are missing): was it saved from another model?")


def _check_shapes(model, params, batch_stats, model_name: str) -> None:
    input_shape = models.family_of(model).input_shape_of(params)
    if mismatch := models.variables_mismatch(model, input_shape, params=params, batch_stats=batch_stats):
        collection, problem = mismatch
        raise ValueError(f"the {collection} do not fit {model_name}: {problem} (another width or depth?).")


def save_torch(ticket: Ticket, out_dir: str, *, trained: dict | None = None) -> list[str]:
    """Write `ticket` for PyTorch into `out_dir`: state_dict.safetensors (the rewound weights and BatchNorm
    statistics), mask.safetensors (bool, same names) and, given `trained` ({'params', 'batch_stats'}),
    trained_state_dict.safetensors. Load them with `safetensors.torch.load_file`; returns the paths written."""
    os.makedirs(out_dir, exist_ok=True)
    info = {"elax_model": ticket.model_name, "names": names_lib.reference(ticket.model)}
    files = {STATE_FILE: state_dict(ticket.model, ticket.params, ticket.batch_stats, ticket.rewind_step),
             MASK_FILE: mask_dict(ticket.model, ticket.mask)}
    if trained is not None:
        files[TRAINED_STATE_FILE] = state_dict(ticket.model, trained["params"], trained.get("batch_stats", {}),
                                               int((ticket.meta or {}).get("trained_steps") or 0))
    written = []
    for name, tensors in files.items():
        path = os.path.join(out_dir, name)
        save_file(tensors, path, metadata=info)
        written.append(path)
    return written
