"""The family protocol and the registry of model families: what pruning, training and elastic transfer may know
about a model, so that they never look inside a module.

A family declares (fields of `Family`): its registry `name`; how model names read (`pattern`, `regex`) and are
built (`build(*regex groups, num_classes=, dtype=)`) and named back (`name_of`); `examples`; the `input_shape`
(H, W, C) its models are traced on; what images the params were built for: `input_channels(params)` (the
channels, when the params do not depend on the image size) or `input_shape_from(params)` (H, W, C, when they do,
as a ViT's position embedding); `min_input_size` and `input_problem(model, image_shape)` (what a model cannot
take, e.g. patches that do not tile the image); `prune_exclude`, path prefixes never pruned (besides leaves that
are not kernels); `pin_first_blocks` (E-LTH keeps block 0 of every stage in place); `classifier`, the unit
holding the classifier.

A model (a Flax linen module) of a family must have:
- `family`: the family's registry name, and `stage_sizes`: blocks per stage;
- `__call__(images, train: bool)`: float images [B, H, W, C] -> logits [B, classes];
- top-level units `stage{s}_block{b}` (s from 1, b from 0) for every block of `stage_sizes`; stem, head and
  anything else under other names;
- variables `params` and, optionally, `batch_stats` (BatchNorm statistics): no other collection.
`num_classes` and `dtype` fields are optional (transfer builds a target with the source's). Which blocks elastic
transfer may replicate or drop follows from shapes (`fixed_blocks`). `check_model` names what a model lacks.
"""

import dataclasses
import difflib
import functools
import re
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from elax import masks
from elax.registry import Registry

BLOCK_NAME = re.compile(r"stage(\d+)_block(\d+)")
COLLECTIONS = ("params", "batch_stats")


@dataclasses.dataclass(frozen=True)
class Family:
    """One model family (e.g. CIFAR ResNets) of the registry; see the module docstring for each field."""

    name: str
    pattern: str
    regex: re.Pattern
    build: Callable[..., nn.Module]
    name_of: Callable[[nn.Module], str]
    examples: tuple[str, ...]
    input_shape: tuple[int, int, int] = (32, 32, 3)
    prune_exclude: tuple[str, ...] = ()
    pin_first_blocks: bool = False
    input_channels: Callable[[Any], int] | None = None
    input_shape_from: Callable[[Any], tuple[int, int, int]] | None = None
    min_input_size: int = 1
    input_problem: Callable[[nn.Module, tuple], str | None] | None = None
    classifier: str = "head"

    @property
    def prunable(self):
        """The predicate of the leaves IMP prunes: conv and dense kernels outside `prune_exclude`."""
        return masks.prunable_kernels(self.prune_exclude)

    def num_classes_of(self, params) -> int:
        return int(params[self.classifier]["kernel"].shape[-1])

    def input_shape_of(self, params) -> tuple[int, int, int]:
        """An input shape that `params` fit: the family's with their channels (e.g. 1 for MNIST), or the shape
        they were built for."""
        if self.input_shape_from:
            return tuple(self.input_shape_from(params))
        h, w, c = self.input_shape
        return h, w, self.input_channels(params) if self.input_channels else c


FAMILIES: Registry[Family] = Registry("model family")


def register(family: Family) -> Family:
    """Add `family` to the registry (replacing one of the same name); returns it."""
    return FAMILIES.register(family.name, family)


def _match(name: str):
    for _, family in FAMILIES.items():
        match = family.regex.fullmatch(name) if isinstance(name, str) else None
        if match:
            return family, match
    examples = [e for _, f in FAMILIES.items() for e in f.examples]
    close = difflib.get_close_matches(str(name), examples, n=1, cutoff=0.7)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    patterns = ", ".join(f.pattern for _, f in FAMILIES.items())
    raise ValueError(f"Unknown model {name!r}.{hint} Valid names: {patterns} (e.g. {', '.join(examples)}).")


def get_model(name: str, num_classes: int = 10, dtype: Any = jnp.float32) -> nn.Module:
    """The Flax module registered under `name`; raises ValueError listing valid names."""
    family, match = _match(name)
    return family.build(*match.groups(), num_classes=num_classes, dtype=dtype)


def family_of(model) -> Family:
    """The Family of a module or model name; ValueError for models outside the registry."""
    if isinstance(model, str):
        return _match(model)[0]
    name = getattr(model, "family", None)
    if name not in FAMILIES:
        raise ValueError(f"{type(model).__name__} is not a model of a registered family "
                         f"({', '.join(FAMILIES)}): give it a `family` attribute naming its Family, registered "
                         "with elax.models.register.")
    return FAMILIES.get(name)


def model_name(model) -> str:
    """Inverse of `get_model` for registry models (used to record which model a ticket belongs to)."""
    return family_of(model).name_of(model)


def split_variables(variables) -> tuple[dict, dict]:
    """(params, batch_stats) of a model's variables; batch_stats is {} for a model without BatchNorm."""
    return variables["params"], variables.get("batch_stats", {})


def init_variables(model, key, input_shape):
    """Initial {'params'[, 'batch_stats']} of `model` for images of `input_shape` (H, W, C), drawn on the host CPU
    on every backend (the same values everywhere), then put on the default device uncommitted, as a jitted init's
    output would be (later programs may place it anywhere)."""
    variables = _jitted_init(model, tuple(input_shape))(jax.device_put(key, _host_cpu()))
    return jax.device_put(jax.device_get(variables))


# Level 1 compiles an init's random draws several times faster than XLA:CPU's default, with identical values
# (docs/performance.md); level 0 would change the float rounding.
CPU_INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 1}


def _host_cpu():
    return jax.local_devices(backend="cpu")[0]


@functools.lru_cache(maxsize=32)
def _jitted_init(model, input_shape):
    # One compilation per (model, input shape), however many seeds are initialised.
    dummy = jnp.zeros((1, *input_shape), jnp.float32)
    init = jax.jit(lambda key: model.init(key, dummy, train=False))
    key = jax.device_put(jax.random.key(0), _host_cpu())
    return init.lower(key).compile(compiler_options=CPU_INIT_COMPILER_OPTIONS)


def variable_shapes(model, input_shape) -> dict:
    """{'params': ...[, 'batch_stats': ...]} of ShapeDtypeStructs: the init traced, not run (cheap, no compile)."""
    return jax.tree.map(lambda leaf: leaf, _traced_shapes(model, tuple(input_shape)))   # new containers


def variables_mismatch(model, input_shape, **trees) -> tuple[str, str] | None:
    """(collection, problem) of the first of `trees` (collection=tree) whose leaves or shapes differ from `model`'s
    variables on `input_shape`, e.g. ('params', "leaf 'head/kernel' has shape (64, 100), ..."); None if all fit."""
    expected = variable_shapes(model, input_shape)
    for collection, tree in trees.items():
        if problem := masks.shape_mismatch(tree, expected.get(collection, {})):
            return collection, problem
    return None


@functools.lru_cache(maxsize=32)
def _traced_shapes(model, input_shape):
    # Not through init_variables: its cached jitted init must not be created inside this trace. Cached: config
    # validation and transfers ask again for every run.
    return jax.eval_shape(lambda key: model.init(key, jnp.zeros((1, *input_shape)), train=False), jax.random.key(0))


def stage_sizes(model) -> tuple[int, ...]:
    """Blocks per stage of a registry module."""
    return tuple(model.stage_sizes)


def fixed_blocks(model) -> dict[int, tuple[bool, ...]]:
    """{stage: (fixed?, ...) per block}: a fixed block (input shape != output shape, or pinned by the family)
    can only map to its own position in elastic transfer; the others may be replicated, dropped or re-ordered."""
    family, shapes = family_of(model), block_shapes(model)
    return {s: tuple(shapes[(s, b)][0] != shapes[(s, b)][1] or (family.pin_first_blocks and b == 0)
                     for b in range(n)) for s, n in enumerate(stage_sizes(model), start=1)}


@functools.lru_cache(maxsize=64)
def block_shapes(model) -> dict[tuple[int, int], tuple]:
    """{(stage, block): (input shape, output shape)} of every `stage{s}_block{b}` unit on the family's input
    shape, from a traced (not run) init."""
    input_shape, shapes = family_of(model).input_shape, {}

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        match = BLOCK_NAME.fullmatch(context.module.name or "")
        if match and context.method_name == "__call__":
            shapes[(int(match[1]), int(match[2]))] = (args[0].shape[1:], out.shape[1:])
        return out

    with nn.intercept_methods(record):
        jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, *input_shape)), train=False))
    return shapes


def check_model(model, input_shape=None) -> None:
    """ValueError naming what `model` lacks of the family protocol (module docstring), else None."""
    family = family_of(model)
    what = f"{type(model).__name__} of family {family.name!r}"
    sizes = getattr(model, "stage_sizes", None)
    if sizes is None or not all(isinstance(n, int) and n > 0 for n in sizes):
        raise ValueError(f"{what} needs `stage_sizes`, its blocks per stage (e.g. (3, 3, 3)); got {sizes!r}.")
    try:
        shapes = variable_shapes(model, input_shape or family.input_shape)
    except Exception as e:  # any error of the family's module: say which protocol call failed
        raise ValueError(f"{what} does not build with model.init(key, images, train=False) on images "
                         f"{(1, *(input_shape or family.input_shape))}: {type(e).__name__}: {e}") from None
    extra = sorted(set(shapes) - set(COLLECTIONS))
    if extra:
        raise ValueError(f"{what} has the variable collection {extra[0]!r}; elax trains models whose variables "
                         "are 'params' and, optionally, 'batch_stats'.")
    found = {(int(m[1]), int(m[2])) for key in shapes["params"] if (m := BLOCK_NAME.fullmatch(str(key)))}
    expected = {(s, b) for s, n in enumerate(sizes, start=1) for b in range(n)}
    if found != expected:
        (s, b), problem = (min(expected - found), "lacks") if expected - found else (min(found - expected), "has")
        raise ValueError(f"{what} {problem} the unit 'stage{s}_block{b}' (stage_sizes {tuple(sizes)}): name the "
                         "blocks of stage s stage{s}_block{b}, b from 0, at the top level of its params.")
    if "kernel" not in shapes["params"].get(family.classifier, {}):
        raise ValueError(f"{what} has no classifier kernel at params[{family.classifier!r}]['kernel'] (set the "
                         "family's `classifier` to the unit that holds it).")
