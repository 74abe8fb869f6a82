"""Tickets that travel: one self-describing file per ticket, and exchange with PyTorch and OpenLTH.

- `files`:   `save(ticket, path, ...)`, `load(path) -> Ticket`, `info(path)`, `load_trained(path)`: a safetensors
             file with the mask, rewound params, BatchNorm statistics, optionally the trained weights, and
             metadata (model, level, sparsity, rewind step, recipe, run, test accuracy, format version).
- `from_runs`: `export(run, level, path, trained=False)`: a run's ticket with its recipe and result.
- `publish`: `publish(experiments, out, seed=0)`: every level of their IMP and ETT runs, trained weights
             included, and a table; `evaluate(path, data_dir=None)`: a file's trained weights' test accuracy, again;
             `config_of(ticket)`: the config that trains it as its run did.
- `records`: `record(workdir, ticket, test_accuracy, ...)`: a ticket trained by hand, recorded as a run for
             `elax.report`.
- `names`, `pytorch`: the reference implementations' parameter names (OpenLTH's CIFAR ResNets and VGGs,
             torchvision's ResNets) and `save_torch`: state dict + mask files that torch loads without elax.
- `openlth`: `from_openlth(level_dir, model_name)`: a level directory of OpenLTH / ElasticLTH as an elax Ticket.
- `cli`:     `python -m elax.tickets export RUN --level N OUT [--trained] | publish EXPERIMENT... OUT [--seed S] |
             info FILE | evaluate FILE | torch FILE OUT_DIR | openlth LEVEL_DIR MODEL OUT`.

docs/tickets.md describes the file format and the PyTorch side.
"""

from elax.tickets.from_runs import export, from_run
from elax.tickets.files import FORMAT_VERSION, info, load, load_trained, save
from elax.tickets.names import TORCH_NAMES, name_table
from elax.tickets.openlth import from_openlth, from_openlth_arrays
from elax.tickets.publish import config_of, evaluate, publish
from elax.tickets.pytorch import mask_dict, save_torch, state_dict, ticket_from_torch
from elax.tickets.records import record

__all__ = ["FORMAT_VERSION", "TORCH_NAMES", "config_of", "evaluate", "export", "from_openlth", "from_openlth_arrays",
           "from_run", "info", "load", "load_trained", "mask_dict", "name_table", "publish", "record", "save",
           "save_torch", "state_dict", "ticket_from_torch"]
