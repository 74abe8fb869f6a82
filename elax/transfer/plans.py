"""Transfer plans: which source block every target block `stage{s}_block{b}` copies, stage by stage.

Strategies, with k and m the free (non-fixed) blocks per stage of source and target:
  stretch (m > k)  "append":      B0 B1..Bk, then B1..Bk again, earliest first, until the stage is full.
                   "interpolate": B0, then each Bj repeated in place; the first m % k blocks get one extra copy.
  squeeze (m < k)  "drop_last":   B0..Bm.
                   "interleave":  B0 and B(1 + floor(i * k / m)) for i = 0..m-1: the k non-first blocks are cut
                                  into m runs of k/m blocks and the first block of each run is kept, so B1 is
                                  always kept and dropped blocks are spread evenly over the stage.
  same depth: the identity, whatever the strategy name.
The official E-LTH mapping string ("0:0;1:1,5;2:2,6;3:3,7;4:4,8", or one per stage joined by "|") is accepted
wherever a strategy name is. A strategy of your own is one function and one `STRATEGIES.register` call.
"""

import dataclasses
from typing import Callable, NamedTuple

import numpy as np

from elax import models
from elax.registry import Registry

_SYNTAX = "'src:tgt[,tgt...]' entries joined by ';' (e.g. '0:0;1:1,3;2:2,4'), one per stage joined by '|'"


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
    source, target = as_model(source_model), as_model(target_model)
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
    source, target = as_model(source_model), as_model(target_model)
    names = models.model_name(source), models.model_name(target)
    _check_compatible(source, target, *names)
    _fixed_prefixes(source, target, " -> ".join(names))


def as_model(model):
    """The module of a registry name, or `model` itself."""
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


class Strategy(NamedTuple):
    direction: str                              # "stretch" or "squeeze"
    free_sources: Callable[[int, int], tuple]   # (k, m) -> the free source block (0..k-1) of each free target block


STRATEGIES: Registry[Strategy] = Registry("strategy")
STRATEGIES.register("append", Strategy("stretch", _append))
STRATEGIES.register("interpolate", Strategy("stretch", _interpolate))
STRATEGIES.register("drop_last", Strategy("squeeze", _drop_last))
STRATEGIES.register("interleave", Strategy("squeeze", _interleave))


def strategies(direction: str | None = None) -> tuple[str, ...]:
    """The strategy names (of one direction: 'stretch' or 'squeeze')."""
    return tuple(n for n, s in STRATEGIES.items() if direction in (None, s.direction))


def _strategy_mapping(strategy: str, source_sizes: tuple, target_sizes: tuple, fixed: tuple) -> dict:
    if strategy not in STRATEGIES:
        valid = ", ".join(f"{', '.join(map(repr, strategies(d)))} ({d})" for d in ("stretch", "squeeze"))
        raise ValueError(f"Unknown strategy {strategy!r}. Valid: {valid}, or an official mapping string of "
                         f"{_SYNTAX}.")
    mapping = {}
    for s, (n_source, n_target, f) in enumerate(zip(source_sizes, target_sizes, fixed), start=1):
        if n_source == n_target:
            mapping[s] = tuple(range(n_target))
            continue
        direction = "stretch" if n_target > n_source else "squeeze"
        if STRATEGIES.get(strategy).direction != direction:
            valid = ", ".join(map(repr, strategies(direction)))
            raise ValueError(f"Strategy {strategy!r} cannot {direction} stage {s} from {n_source} to {n_target} "
                             f"blocks; valid {direction} strategies: {valid} (or an official mapping string).")
        if n_source == f or n_target < f:
            raise ValueError(f"Stage {s} of the source has only block 0 or other fixed blocks (a block whose input "
                             "and output shapes differ, e.g. a ResNet's downsampling block 0 or a VGG conv that "
                             "changes the channels, is never replicated or dropped), so it cannot be "
                             f"{direction.rstrip('e')}ed to {n_target} blocks.")
        free = STRATEGIES.get(strategy).free_sources(n_source - f, n_target - f)
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
