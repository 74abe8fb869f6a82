"""Tickets found with OpenLTH or the official E-LTH code (VITA-Group/ElasticLTH, an OpenLTH fork) as elax Tickets.

A level directory of those projects (`.../replicate_R/level_L/main`) holds `mask.pth` (the prunable weights' 0/1
masks, int tensors, by parameter name) and `model_epE_itI.pth` state dicts: the one of the step training starts
from (the rewind step, saved already masked) and the trained one. The ticket is the mask and the earliest of those
state dicts. Reading .pth needs torch; `from_openlth_arrays` takes the same dicts as numpy arrays without it.
"""

import os
import re

import numpy as np

from elax.ticket import Ticket
from elax.tickets.pytorch import ticket_from_torch

MASK_FILE = "mask.pth"
WEIGHTS = re.compile(r"model_ep(\d+)_it(\d+)\.pth")
# OpenLTH wraps torchvision's ResNet in `Model.model`: its state dict keys are torchvision's after this prefix.
WRAPPED = "model."


def from_openlth_arrays(state_dict: dict, mask: dict, model_name: str, *, level: int = 0, rewind_step: int = 0,
                        meta: dict | None = None) -> Ticket:
    """The elax Ticket of `model_name` (e.g. "cifar_resnet_20") from OpenLTH's state dict and mask as numpy
    arrays ({'conv.weight': array, ...}, {'conv.weight': 0/1 array, ...}): names and layouts as in
    `elax.tickets.names`; a mask entry absent keeps its weight whole; OpenLTH's `model.` prefix of ImageNet
    ResNets is dropped."""
    state, mask = _unwrapped(state_dict), _unwrapped(mask)
    return ticket_from_torch(state, mask, model_name, level=level, rewind_step=rewind_step,
                             meta={"source": "openlth", **(meta or {})})


def _unwrapped(tensors: dict) -> dict:
    if tensors and all(k.startswith(WRAPPED) for k in tensors):
        return {k[len(WRAPPED):]: v for k, v in tensors.items()}
    return dict(tensors)


def from_openlth(level_dir: str, model_name: str, *, weights: str | None = None,
                 iterations_per_epoch: int | None = None, rewind_step: int | None = None,
                 level: int | None = None) -> Ticket:
    """The ticket of an OpenLTH / ElasticLTH level directory as an elax Ticket of `model_name`.

    weights: the state dict file in `level_dir` to take (default: the earliest model_epE_itI.pth, the rewind
    point). Its step is the rewind step: I when E is 0, else E * iterations_per_epoch + I (pass it: OpenLTH
    names steps by epoch, e.g. rewinding CIFAR-10 at batch 128 to 1000 iterations is model_ep2_it218.pth, 391 an
    epoch); `rewind_step` overrides it. level: default from the directory's name (level_L or level_L/main),
    else 0.
    """
    torch = _torch(level_dir)
    mask_path = os.path.join(level_dir, MASK_FILE)
    if not os.path.isfile(mask_path):
        raise FileNotFoundError(f"{level_dir} has no {MASK_FILE}: pass an OpenLTH level directory "
                                "(.../replicate_R/level_L/main).")
    name = weights or _earliest(level_dir)
    if not os.path.isfile(os.path.join(level_dir, name)):
        raise FileNotFoundError(f"{level_dir} has no {name}.")
    if rewind_step is None:
        match = WEIGHTS.fullmatch(os.path.basename(name))
        rewind_step = _step(match, iterations_per_epoch, name) if match else 0
    state, mask = (_read_pth(torch, p) for p in (os.path.join(level_dir, name), mask_path))
    return from_openlth_arrays(state, mask, model_name, level=_level(level_dir) if level is None else level,
                               rewind_step=rewind_step, meta={"source_dir": os.path.realpath(level_dir),
                                                              "source_weights": os.path.basename(name)})


def _torch(level_dir: str):
    try:
        import torch  # optional: only OpenLTH's .pth files need it
    except ImportError:
        raise ModuleNotFoundError(f"reading {level_dir} needs PyTorch (OpenLTH saves .pth files): pip install "
                                  "torch, or load its arrays yourself and call "
                                  "elax.tickets.from_openlth_arrays.") from None
    return torch


def _earliest(level_dir: str) -> str:
    found = sorted((int(m[1]), int(m[2]), m[0]) for n in os.listdir(level_dir) if (m := WEIGHTS.fullmatch(n)))
    if not found:
        raise FileNotFoundError(f"{level_dir} has {MASK_FILE} but no model_epE_itI.pth state dict: pass an OpenLTH "
                                "level directory whose training has started.")
    return found[0][2]


def _step(match, iterations_per_epoch: int | None, name: str) -> int:
    epoch, iteration = int(match[1]), int(match[2])
    if epoch and not iterations_per_epoch:
        raise ValueError(f"{name} is at epoch {epoch}, iteration {iteration}: pass iterations_per_epoch (CIFAR-10 "
                         "at batch 128: 391) so that the rewind step is known.")
    return epoch * (iterations_per_epoch or 0) + iteration


def _level(level_dir: str) -> int:
    parts = os.path.normpath(os.path.abspath(level_dir)).split(os.sep)
    for part in reversed(parts[-2:]):
        if re.fullmatch(r"level_\d+", part):
            return int(part[6:])
    return 0


def _read_pth(torch, path: str) -> dict:
    """{name: numpy array} of a torch state dict file; weights_only: a .pth must not run code when read."""
    try:
        tensors = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for unreadable files
        raise ValueError(f"{path} cannot be read as a PyTorch state dict ({type(e).__name__}: "
                         f"{' '.join(str(e).split())[:160]}).") from None
    if not isinstance(tensors, dict):
        raise ValueError(f"{path} holds a {type(tensors).__name__}, not a state dict of tensors by name.")
    return {k: v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v) for k, v in tensors.items()}
