"""Elastic ticket transformation (E-LTH): move a ticket to a deeper or shallower member of its family.

A `Plan` says, stage by stage, which source block every target block `stage{s}_block{b}` copies.
`apply(plan, tree)` performs that copy on any tree shaped like the source params (params, batch_stats, masks,
scores); `transfer_ticket` moves a whole `Ticket`. Stem, head and the number of stages are kept, and block 0 of a
stage (the downsampling block) only ever maps to block 0 (ELTH.md section 4).

Strategies, with k and m the non-first blocks per stage of source and target:
  stretch (m > k)  "append":      B0 B1..Bk, then B1..Bk again, earliest first, until the stage is full.
                   "interpolate": B0, then each Bj repeated in place; the first m % k blocks get one extra copy.
  squeeze (m < k)  "drop_last":   B0..Bm.
                   "interleave":  B0 and B(1 + floor(i * k / m)) for i = 0..m-1: the k non-first blocks are cut
                                  into m runs of k/m blocks and the first block of each run is kept, so B1 is
                                  always kept and dropped blocks are spread evenly over the stage.
  same depth: the identity, whatever the strategy name.
The official E-LTH mapping string ("0:0;1:1,5;2:2,6;3:3,7;4:4,8", or one per stage joined by "|") is accepted
wherever a strategy name is.

From a shell, `python -m elax.transfer SOURCE TARGET [--strategy S]` prints a plan and its mapping string.
"""

import argparse
import dataclasses
import re
import sys
from collections.abc import Mapping

import flax
import jax
import numpy as np

from elax import masks as masks_lib
from elax import pruning
from elax import models
from elax.ticket import Ticket

REPLICA_MASKS = ("copy", "permute")
WEIGHTS = ("source", "reinit")

_BLOCK_KEY = re.compile(r"stage(\d+)_block(\d+)")
_SYNTAX = "'src:tgt[,tgt...]' entries joined by ';' (e.g. '0:0;1:1,3;2:2,4'), one per stage joined by '|'"


# ----------------------------------------------------------------------------------------------------------- plan


@dataclasses.dataclass(frozen=True)
class Plan:
    """Which source block each target block copies: `mapping[stage][target_block] = source_block`.

    Stages count from 1, blocks from 0 (the `stage{s}_block{b}` names). A Plan is validated when built.
    """

    source: str
    target: str
    source_stage_sizes: tuple
    target_stage_sizes: tuple
    strategy: str
    mapping: dict
    fixed: tuple = ()   # per stage, how many leading blocks are fixed (map only to themselves); () = 1 each

    def __post_init__(self):
        if not self.fixed:
            object.__setattr__(self, "fixed", (1,) * len(self.target_stage_sizes))
        _validate_mapping(self.mapping, tuple(self.source_stage_sizes), tuple(self.target_stage_sizes),
                          tuple(self.fixed))
        # Normalise (lists, numpy ints) so that plans compare and print alike however they were built.
        normalised = {int(s): tuple(int(j) for j in sources) for s, sources in sorted(self.mapping.items())}
        object.__setattr__(self, "mapping", normalised)
        object.__setattr__(self, "source_stage_sizes", tuple(self.source_stage_sizes))
        object.__setattr__(self, "target_stage_sizes", tuple(self.target_stage_sizes))

    def __str__(self) -> str:
        lines = [f"{self.source} -> {self.target} ({self.strategy})"]
        lines += [f"  stage {s}: " + " ".join(f"B{j}" for j in sources) for s, sources in self.mapping.items()]
        return "\n".join(lines)

    def replicas(self) -> list[tuple[int, int]]:
        """(stage, target block) of every replica: a copy of a source block an earlier target block also copies."""
        return [(s, b) for s, sources in self.mapping.items() for b, j in enumerate(sources) if j in sources[:b]]

    def to_string(self) -> str:
        """The official mapping syntax: one string if all stages share it, else per-stage strings joined by '|'."""
        per_stage = [_stage_string(sources) for sources in self.mapping.values()]
        return per_stage[0] if len(set(per_stage)) == 1 else "|".join(per_stage)


def plan(source_model, target_model, strategy: str = "append") -> Plan:
    """The block mapping from `source_model` to `target_model` (modules or registry names).

    `strategy` is a strategy name (see the module docstring) or an official mapping string.
    """
    source, target = _as_model(source_model), _as_model(target_model)
    source_name, target_name = models.model_name(source), models.model_name(target)
    _check_compatible(source, target, source_name, target_name)
    source_sizes, target_sizes = models.stage_sizes(source), models.stage_sizes(target)
    fixed = _fixed_prefixes(source, target, f"{source_name} -> {target_name}")
    if not isinstance(strategy, str):
        raise ValueError(f"strategy must be a string (a strategy name or a mapping string), got {strategy!r}.")
    strategy = strategy.strip()
    if ":" in strategy:
        mapping = _parse_mapping_string(strategy, target_sizes)
    else:
        mapping = _strategy_mapping(strategy, source_sizes, target_sizes, fixed)
    return Plan(source_name, target_name, source_sizes, target_sizes, strategy, mapping, fixed)


def check_transferable(source_model, target_model) -> None:
    """Raise ValueError if no strategy can move tickets between these models (family, stages, widths, fixed
    blocks): a problem of the models chosen, not of the strategy."""
    source, target = _as_model(source_model), _as_model(target_model)
    names = models.model_name(source), models.model_name(target)
    _check_compatible(source, target, *names)
    _fixed_prefixes(source, target, " -> ".join(names))


def _as_model(model):
    return models.get_model(model) if isinstance(model, str) else model


def _check_compatible(source, target, source_name, target_name) -> None:
    pair = f"{source_name} -> {target_name}"
    source_family, target_family = models.family_of(source), models.family_of(target)
    if source_family != target_family:
        raise ValueError(f"Cannot transfer between model families ({pair}: {source_family.name!r} vs "
                         f"{target_family.name!r}); E-LTH moves tickets within one family (one block type).")
    source_sizes, target_sizes = models.stage_sizes(source), models.stage_sizes(target)
    if len(source_sizes) != len(target_sizes):
        raise ValueError(f"Cannot transfer between different numbers of stages ({pair}: "
                         f"{len(source_sizes)} vs {len(target_sizes)}); E-LTH keeps the stages.")
    source_shapes, target_shapes = models.block_shapes(source), models.block_shapes(target)
    for s in range(1, len(source_sizes) + 1):
        a, b = source_shapes[(s, 0)][1], target_shapes[(s, 0)][1]
        if a != b:
            raise ValueError(f"Cannot transfer between different widths ({pair}: stage {s} outputs {a} vs {b}); "
                             "E-LTH changes depth only, so block shapes must match.")


def _fixed_prefixes(source, target, pair: str) -> tuple:
    """Per stage, the number of leading fixed blocks (`models.fixed_blocks`), the same in source and target."""
    prefixes = []
    for s, (a, b) in enumerate(zip(models.fixed_blocks(source).values(), models.fixed_blocks(target).values()),
                               start=1):
        n = sum(a)
        if a[:n] != (True,) * n or (True in b[n:]) or b[:n] != a[:n]:
            raise ValueError(f"{pair}: stage {s} has fixed blocks {a} vs {b} (fixed = shape-changing or kept "
                             "in place); elastic transfer needs the fixed blocks first in every stage, the same "
                             "number in source and target.")
        prefixes.append(n)
    return tuple(prefixes)


# ----------------------------------------------------------------------------------------------------- strategies


# A strategy maps the k free (non-fixed) source blocks of a stage to its m free target blocks: it returns, for
# each free target block, the index (0..k-1) of the free source block it copies.

def _append(k: int, m: int) -> tuple:
    return tuple(i % k for i in range(m))


def _interpolate(k: int, m: int) -> tuple:
    copies = [m // k + (j < m % k) for j in range(k)]
    return tuple(j for j in range(k) for _ in range(copies[j]))


def _drop_last(k: int, m: int) -> tuple:
    return tuple(range(m))


def _interleave(k: int, m: int) -> tuple:
    return tuple(i * k // m for i in range(m))


# name -> (direction, function); adding a strategy is one function and one entry here.
STRATEGY_FUNCTIONS = {"append": ("stretch", _append), "interpolate": ("stretch", _interpolate),
                      "drop_last": ("squeeze", _drop_last), "interleave": ("squeeze", _interleave)}


def strategies(direction: str | None = None) -> tuple[str, ...]:
    """The strategy names (of one direction: 'stretch' or 'squeeze')."""
    return tuple(n for n, (d, _) in STRATEGY_FUNCTIONS.items() if direction in (None, d))


def _strategy_mapping(strategy: str, source_sizes: tuple, target_sizes: tuple, fixed: tuple) -> dict:
    if strategy not in STRATEGY_FUNCTIONS:
        valid = ", ".join(f"{', '.join(map(repr, strategies(d)))} ({d})" for d in ("stretch", "squeeze"))
        raise ValueError(f"Unknown strategy {strategy!r}. Valid: {valid}, or an official mapping string of "
                         f"{_SYNTAX}.")
    mapping = {}
    for s, (n_source, n_target, f) in enumerate(zip(source_sizes, target_sizes, fixed), start=1):
        if n_source == n_target:
            mapping[s] = tuple(range(n_target))
            continue
        direction = "stretch" if n_target > n_source else "squeeze"
        if STRATEGY_FUNCTIONS[strategy][0] != direction:
            valid = ", ".join(map(repr, strategies(direction)))
            raise ValueError(f"Strategy {strategy!r} cannot {direction} stage {s} from {n_source} to {n_target} "
                             f"blocks; valid {direction} strategies: {valid} (or an official mapping string).")
        if n_source == f or n_target < f:
            raise ValueError(f"Stage {s} of the source has only block 0 or other fixed blocks (a block whose input "
                             "and output shapes differ, e.g. a ResNet's downsampling block 0 or a VGG conv that "
                             "changes the channels, is never replicated or dropped), so it cannot be "
                             f"{direction.rstrip('e')}ed to {n_target} blocks.")
        free = STRATEGY_FUNCTIONS[strategy][1](n_source - f, n_target - f)
        mapping[s] = tuple(range(f)) + tuple(f + j for j in free)
    return mapping


# ------------------------------------------------------------------------------------- mapping strings, validation


def _stage_string(sources: tuple) -> str:
    targets_of = {}
    for b, j in enumerate(sources):
        targets_of.setdefault(j, []).append(b)
    return ";".join(f"{j}:{','.join(map(str, targets))}" for j, targets in sorted(targets_of.items()))


def _parse_mapping_string(text: str, target_sizes: tuple) -> dict:
    parts = text.split("|")
    if len(parts) == 1:
        parts = parts * len(target_sizes)
    elif len(parts) != len(target_sizes):
        raise ValueError(f"Mapping string {text!r} has {len(parts)} '|'-separated stage mappings but the models "
                         f"have {len(target_sizes)} stages: give one mapping shared by all stages or one per stage.")
    return {s: _parse_stage(part, s, n) for s, (part, n) in enumerate(zip(parts, target_sizes), start=1)}


def _parse_stage(text: str, stage: int, n_target: int) -> tuple:
    """'0:0;1:1,2' -> (0, 1, 1); None marks a target block that no entry names (reported by validation)."""
    sources, entry_of = [None] * n_target, {}
    for entry in text.split(";"):
        source, colon, targets = entry.partition(":")
        try:
            source, targets = int(source), [int(t) for t in targets.split(",")]
        except ValueError:
            colon = ""
        if not colon:
            raise ValueError(f"Cannot parse {entry!r} in the stage {stage} mapping {text!r}: expected {_SYNTAX}.")
        if source in entry_of:   # most likely a typo for another source block
            raise ValueError(f"Stage {stage}: source block {source} has two entries ({entry_of[source]!r} and "
                             f"{entry!r}); give each source block one entry listing all its target blocks.")
        entry_of[source] = entry
        for t in targets:
            if not 0 <= t < n_target:
                raise ValueError(f"Stage {stage}: target block {t} does not exist; the target stage has "
                                 f"{n_target} blocks (0..{n_target - 1}).")
            if sources[t] is not None:
                raise ValueError(f"Stage {stage}: target block {t} gets two source blocks ({sources[t]} and "
                                 f"{source}); every target block copies exactly one.")
            sources[t] = source
    return tuple(sources)


def _validate_mapping(mapping, source_sizes: tuple, target_sizes: tuple, fixed: tuple) -> None:
    """Raise ValueError naming the first stage and block that break the E-LTH mapping rules."""
    if len(source_sizes) != len(target_sizes):
        raise ValueError(f"Source and target have different numbers of stages: {source_sizes} vs {target_sizes}.")
    stages = list(range(1, len(target_sizes) + 1))
    if sorted(mapping) != stages:
        raise ValueError(f"The mapping needs one entry per stage {stages}, got stages {sorted(mapping)}.")
    for s in stages:
        n_source, n_target, sources = source_sizes[s - 1], target_sizes[s - 1], tuple(mapping[s])
        if len(sources) > n_target:
            raise ValueError(f"Stage {s}: the mapping names {len(sources)} target blocks but the target stage has "
                             f"{n_target} (0..{n_target - 1}).")
        for b in range(n_target):
            _check_source(s, b, sources[b] if b < len(sources) else None, n_source, fixed[s - 1])


def _check_source(stage: int, block: int, source, n_source: int, fixed: int) -> None:
    """Target `block` may copy `source`: it exists, and a fixed block (the first `fixed` of a stage, e.g. the
    downsampling block 0) is only ever copied to its own position."""
    where = f"Stage {stage}, target block {block}"
    if source is None:
        raise ValueError(f"{where} has no source block; every target block copies exactly one source block.")
    if isinstance(source, bool) or not isinstance(source, (int, np.integer)) or not 0 <= source < n_source:
        raise ValueError(f"{where}: source block {source!r} does not exist; the source stage has {n_source} "
                         f"blocks (0..{n_source - 1}).")
    if block < fixed and source != block:
        raise ValueError(f"{where} (a fixed block, e.g. the downsampling block) must copy source block {block}, "
                         f"not block {source}.")
    if block != source and source < fixed:
        valid = f"{fixed}..{n_source - 1}" if n_source > fixed else "none: this source stage cannot be stretched"
        raise ValueError(f"{where}: source block {source} (a fixed block, e.g. the downsampling block) can only "
                         f"feed target block {source}; copy a free source block ({valid}).")


# ---------------------------------------------------------------------------------------------------------- apply


def apply(plan: Plan, tree):
    """`tree` (params, batch_stats, mask or scores of the plan's source) mapped to the target.

    Target `stage{s}_block{b}` is a copy of source `stage{s}_block{plan.mapping[s][b]}`; other top-level keys
    (stem, head) pass through. Containers are new dicts (FrozenDicts come back as dicts); leaves are shared,
    not copied, since jax arrays are immutable. Raises ValueError if `tree` is not a tree of the source model.
    """
    if not isinstance(plan, Plan):
        raise TypeError(f"apply takes a Plan (elax.transfer.plan(source, target, strategy)), got "
                        f"{type(plan).__name__} {plan!r:.60}.")
    if not isinstance(tree, Mapping):
        raise ValueError(f"apply expects a dict tree (params, batch_stats, mask), got {type(tree).__name__}.")
    _check_source_blocks(plan, tree)
    _check_block_shapes(plan, tree)
    out, blocks_placed = {}, False
    for key, value in tree.items():
        if not _BLOCK_KEY.fullmatch(str(key)):
            out[key] = flax.core.unfreeze(value)
        elif not blocks_placed:
            # Emit all target blocks where the source blocks started, so key order stays stem, blocks, head.
            out.update(_target_blocks(plan, tree))
            blocks_placed = True
    return out


def _target_blocks(plan: Plan, tree) -> dict:
    return {f"stage{s}_block{b}": flax.core.unfreeze(tree[f"stage{s}_block{j}"])
            for s, sources in plan.mapping.items() for b, j in enumerate(sources)}


def _check_source_blocks(plan: Plan, tree) -> None:
    found = {(int(m[1]), int(m[2])) for key in tree if (m := _BLOCK_KEY.fullmatch(str(key)))}
    expected = {(s, b) for s, n in enumerate(plan.source_stage_sizes, start=1) for b in range(n)}
    if found == expected:
        return
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


# ------------------------------------------------------------------------------------------------ transfer_ticket


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
    _check_option("replica_masks", replica_masks, REPLICA_MASKS)
    _check_option("weights", weights, WEIGHTS)
    target = _target_module(ticket.model, target_model)
    block_plan = plan(ticket.model, target, strategy)
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
        fresh = models.init_variables(target, jax.random.key(seed), input_shape)
        params, batch_stats = fresh["params"], fresh.get("batch_stats", {})
    meta = {"source_model": ticket.model_name, "source_level": ticket.level, "strategy": block_plan.strategy,
            "replica_masks": replica_masks, "weights": weights}
    return Ticket(target, block_plan.target, mask, masks_lib.apply(params, mask), batch_stats,
                  level=ticket.level, rewind_step=ticket.rewind_step, meta=meta)


def _check_option(name: str, value, valid: tuple) -> None:
    if value not in valid:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, valid))}, got {value!r}.")


def _target_module(source_module, target_model):
    """The target module; a registry name is built with the source's classes and dtype, since the head is kept."""
    if not isinstance(target_model, str):
        return target_model
    options = {a: getattr(source_module, a) for a in ("num_classes", "dtype") if hasattr(source_module, a)}
    return models.get_model(target_model, **options)


def _check_fits_model(target, target_name: str, input_shape: tuple, **trees) -> None:
    """Copied trees must have the shapes of the target's own variables (e.g. the kept head's num_classes)."""
    # eval_shape traces the init without compiling or running it: cheap next to a real init.
    expected = models.variable_shapes(target, input_shape)
    for collection, tree in trees.items():
        problem = masks_lib.shape_mismatch(tree, expected.get(collection, {}))
        if problem:
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


# --------------------------------------------------------------------------------------------------- command line


def main(argv=None) -> int:
    """`python -m elax.transfer SOURCE TARGET [--strategy S]`: the plan, its official mapping string and the
    command that trains the transferred tickets of an IMP run; returns the exit code (2: a bad model or
    strategy)."""
    parser = argparse.ArgumentParser(prog="python -m elax.transfer",
                                     description="Print the block plan of an elastic ticket transfer.")
    parser.add_argument("source", help="registry name of the source model, e.g. cifar_resnet_20")
    parser.add_argument("target", help="registry name of the target model, e.g. cifar_resnet_56")
    parser.add_argument("--strategy", default="append",
                        help=f"{', '.join(strategies())} or an official mapping string (default: append)")
    args = parser.parse_args(argv)
    try:
        block_plan = plan(args.source, args.target, args.strategy)
    except ValueError as error:
        print(f"elax: error: {error}", file=sys.stderr)
        return 2
    print(block_plan)
    print(f"mapping string: {block_plan.to_string()}")
    print("To train the transferred tickets of an IMP run of the source (its recipe is reused):\n"
          "  python main.py --config configs/cifar_transfer.py --config.transfer.source=RUN_DIR "
          f"--config.model.name={block_plan.target} --config.transfer.strategy='{block_plan.strategy}' "
          "--workdir WORKDIR")
    return 0


if __name__ == "__main__":
    sys.exit(main())
