"""Moving trees and tickets along a transfer plan: `apply(plan, tree)` copies blocks in any tree shaped like the
source params (params, batch_stats, masks, scores); `transfer_ticket` moves a whole `Ticket` (mask, params and
BatchNorm statistics by one plan), with the paper's controls (permuted replica masks, re-initialised weights).
"""

from collections.abc import Mapping

import flax
import jax

from elax import masks as masks_lib
from elax import models, pruning
from elax.ticket import Ticket
from elax.transfer.plans import Plan, plan

REPLICA_MASKS = ("copy", "permute")
WEIGHTS = ("source", "reinit")
OPTIONS = {"replica_masks": REPLICA_MASKS, "weights": WEIGHTS}


def apply(plan: Plan, tree):
    """`tree` (params, batch_stats, mask or scores of the plan's source) mapped to the target.

    Target `stage{s}_block{b}` is a copy of source `stage{s}_block{plan.mapping[s][b]}`; other top-level keys
    (stem, head) pass through, and so does a tree with no block at all (the batch_stats of a model whose blocks
    hold no BatchNorm). Containers are new dicts (FrozenDicts come back as dicts); leaves are shared, not copied,
    since jax arrays are immutable. Raises ValueError if `tree` is not a tree of the source model.
    """
    if not isinstance(plan, Plan):
        raise TypeError(f"apply takes a Plan (elax.transfer.plan(source, target, strategy)), got "
                        f"{type(plan).__name__} {plan!r:.60}.")
    if not isinstance(tree, Mapping):
        raise ValueError(f"apply expects a dict tree (params, batch_stats, mask), got {type(tree).__name__}.")
    if not _check_source_blocks(plan, tree):   # no block holds leaves of this tree's kind: nothing to move
        return {key: flax.core.unfreeze(value) for key, value in tree.items()}
    _check_block_shapes(plan, tree)
    out, blocks_placed = {}, False
    for key, value in tree.items():
        if not models.BLOCK_NAME.fullmatch(str(key)):
            out[key] = flax.core.unfreeze(value)
        elif not blocks_placed:
            # Emit all target blocks where the source blocks started, so key order stays stem, blocks, head.
            out.update(_target_blocks(plan, tree))
            blocks_placed = True
    return out


def _target_blocks(plan: Plan, tree) -> dict:
    return {f"stage{s}_block{b}": flax.core.unfreeze(tree[f"stage{s}_block{j}"])
            for s, sources in plan.mapping.items() for b, j in enumerate(sources)}


def _check_source_blocks(plan: Plan, tree) -> bool:
    """Whether `tree` holds the source's blocks (False: it holds none, and is not a variables dict);
    ValueError if it holds some but not those of the source."""
    found = {(int(m[1]), int(m[2])) for key in tree if (m := models.BLOCK_NAME.fullmatch(str(key)))}
    expected = {(s, b) for s, n in enumerate(plan.source_stage_sizes, start=1) for b in range(n)}
    if found == expected:
        return True
    if not found and "params" not in tree:
        return False
    missing, extra = sorted(expected - found), sorted(found - expected)
    if missing:
        problem = f"it has no 'stage{missing[0][0]}_block{missing[0][1]}'"
    else:
        problem = f"it has 'stage{extra[0][0]}_block{extra[0][1]}', which the source lacks"
    tree_sizes = tuple(sum(1 for fs, _ in found if fs == s) for s in range(1, max(s for s, _ in found) + 1)) \
        if found else ()
    hint = " Pass variables['params'] or variables['batch_stats'], not the variables dict." \
        if not found and "params" in tree else ""
    raise ValueError(f"The tree does not fit the plan's source {plan.source} (blocks per stage "
                     f"{plan.source_stage_sizes}): {problem}; the tree has blocks per stage {tree_sizes}. "
                     f"Is it a tree (e.g. a mask) from another model?{hint}")


def _check_block_shapes(plan: Plan, tree) -> None:
    """Each copied block must have the leaves and shapes of the source block of its target position's kind:
    a fixed block is its own kind; the free blocks of a stage share one (that of the first free block)."""
    for s, sources in plan.mapping.items():
        fixed = plan.fixed[s - 1]
        for b, j in enumerate(sources):
            reference = b if b < fixed else fixed
            if j != reference:
                _check_same_shapes(tree[f"stage{s}_block{j}"], tree[f"stage{s}_block{reference}"],
                                   f"stage{s}_block{j}", f"stage{s}_block{b}")


def _check_same_shapes(block, reference, source_name: str, target_name: str) -> None:
    problem = masks_lib.shape_mismatch(block, reference)
    if problem:
        raise ValueError(f"Source {source_name} does not fit target {target_name}: {problem}.")


def transfer_ticket(ticket: Ticket, target_model, strategy: str = "append", *, replica_masks: str = "copy",
                    weights: str = "source", seed: int = 0,
                    prunable: masks_lib.Predicate | None = None) -> Ticket:
    """`ticket` moved to `target_model` (module or registry name): mask, params and BN statistics, one plan.

    replica_masks: "copy" (E-LTH) or "permute" (the paper's control: every replica, i.e. the second and later
    copy of a source block in a stage, gets each prunable mask leaf randomly permuted, density kept).
    weights: "source" (the ticket's rewound weights and BN statistics) or "reinit" (the target's own fresh init
    from `jax.random.key(seed)`, with the transferred mask). Params always come back masked.
    """
    if not isinstance(ticket, Ticket):
        raise TypeError(f"transfer_ticket moves a Ticket (e.g. elax.runs.load_ticket(run_dir, level)), got "
                        f"{type(ticket).__name__}; for bare trees use "
                        "elax.transfer.apply(elax.transfer.plan(source, target), tree).")
    for name, value in (("replica_masks", replica_masks), ("weights", weights)):
        if problem := option_problem(name, value):
            raise ValueError(f"{name}: {problem}")
    target = _target_module(ticket.model, target_model)
    block_plan = plan(ticket.model, target, strategy)
    if replica_masks == "permute" and not block_plan.replicas():
        raise ValueError(f"replica_masks='permute' shuffles the masks of replicated blocks, and "
                         f"{block_plan.strategy!r} from {block_plan.source} to {block_plan.target} replicates none. "
                         "Use 'copy' (the default).")
    masks_lib.validate(ticket.mask, ticket.params)

    mask = apply(block_plan, ticket.mask)
    if replica_masks == "permute":
        mask = _permute_replicas(block_plan, mask, jax.random.key(seed),
                                 prunable or models.family_of(target).prunable)
    input_shape = models.family_of(target).input_shape_of(ticket.params)
    if weights == "source":
        params, batch_stats = apply(block_plan, ticket.params), apply(block_plan, ticket.batch_stats)
        _check_fits_model(target, block_plan.target, input_shape, params=params, batch_stats=batch_stats)
    else:
        params, batch_stats = models.split_variables(models.init_variables(target, jax.random.key(seed),
                                                                           input_shape))
    meta = {"source_model": ticket.model_name, "source_level": ticket.level, "strategy": block_plan.strategy,
            "replica_masks": replica_masks, "weights": weights}
    return Ticket(target, block_plan.target, mask, masks_lib.apply(params, mask), batch_stats,
                  level=ticket.level, rewind_step=ticket.rewind_step, meta=meta)


def option_problem(name: str, value) -> str | None:
    """What is wrong with `value` for the transfer option `name` ("replica_masks", "weights"), or None."""
    valid = OPTIONS[name]
    return None if value in valid else f"unknown option {value!r}. Valid: {', '.join(valid)}."


def _target_module(source_module, target_model):
    """The target module; a registry name is built with the source's classes and dtype, since the head is kept."""
    if not isinstance(target_model, str):
        return target_model
    options = {a: getattr(source_module, a) for a in ("num_classes", "dtype") if hasattr(source_module, a)}
    return models.get_model(target_model, **options)


def _check_fits_model(target, target_name: str, input_shape: tuple, **trees) -> None:
    """Copied trees must have the shapes of the target's own variables (e.g. the kept head's num_classes)."""
    if mismatch := models.variables_mismatch(target, input_shape, **trees):   # the init traced: cheap
        collection, problem = mismatch
        raise ValueError(f"The transferred {collection} do not fit {target_name}: {problem}.")


def _permute_replicas(block_plan: Plan, mask, key, prunable) -> dict:
    """`mask` with the prunable leaves of every replica block randomly permuted (seeded per stage and block)."""
    mask = dict(mask)
    for s, b in block_plan.replicas():
        name = f"stage{s}_block{b}"
        # Wrapping in {name: ...} gives `prunable` the full path, as it sees in the whole tree.
        block_key = jax.random.fold_in(jax.random.fold_in(key, s), b)
        mask[name] = pruning.permute_within_layers({name: mask[name]}, block_key, prunable)[name]
    return mask
