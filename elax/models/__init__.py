"""Model families and the registry of model names ("cifar_resnet_20", "cifar_resnet_56_32") -> Flax modules.

A `Family` declares what the rest of elax needs to know about its models, so that pruning, training and elastic
transfer never look inside a module: the name pattern and builder, the input shape of its datasets, which param
leaves are never pruned, its default rewind step, and its stages of blocks. Every family names its units
`stage{s}_block{b}` (s from 1, b from 0); which blocks elastic transfer may replicate or drop follows from shapes
(`fixed_blocks`). Adding a family is one module plus one `register(Family(...))` call.
"""

import dataclasses
import functools
import re
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

BLOCK_NAME = re.compile(r"stage(\d+)_block(\d+)")


@dataclasses.dataclass(frozen=True)
class Family:
    """One model family (e.g. CIFAR ResNets) of the registry."""

    name: str                      # "cifar_resnet"; the `family` attribute of its modules
    pattern: str                   # how names read, e.g. "cifar_resnet_{depth}[_{width}]"
    regex: re.Pattern              # full-matches a model name; its groups go to `build`
    build: Callable[..., nn.Module]    # build(*groups, num_classes=, dtype=) -> module
    name_of: Callable[[nn.Module], str]   # the inverse of `build`
    examples: tuple[str, ...]
    input_shape: tuple[int, int, int] = (32, 32, 3)   # (H, W, C) of the family's datasets
    rewind_steps: int = 1000       # the paper's rewind point r, in iterations
    prune_exclude: tuple[str, ...] = ()   # param path prefixes never pruned (e.g. ("head",) for VGG)
    pin_first_blocks: bool = False   # E-LTH keeps block 0 of every stage in place, whatever its shapes
    input_channels: Callable[[Any], int] | None = None   # params -> channels of the images they were built for
    min_input_size: int = 1        # smallest image side its downsampling (pools, strides) leaves non-empty
    classifier: str = "head"       # the top-level unit holding the classifier (its kernel's last axis: classes)

    @property
    def prunable(self):
        """The predicate of the leaves IMP prunes: conv and dense kernels outside `prune_exclude`."""
        from elax import masks
        return masks.prunable_kernels(self.prune_exclude)

    def num_classes_of(self, params) -> int:
        return int(params[self.classifier]["kernel"].shape[-1])

    def input_shape_of(self, params) -> tuple[int, int, int]:
        """The family's input shape with the channels that `params` were built for (e.g. 1 for MNIST)."""
        h, w, c = self.input_shape
        return h, w, self.input_channels(params) if self.input_channels else c


_FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Add `family` to the registry (replacing one of the same name); returns it."""
    _FAMILIES[family.name] = family
    return family


def families() -> tuple[Family, ...]:
    return tuple(_FAMILIES.values())


def _match(name: str):
    for family in _FAMILIES.values():
        match = family.regex.fullmatch(name)
        if match:
            return family, match
    patterns = ", ".join(f.pattern for f in _FAMILIES.values())
    examples = ", ".join(e for f in _FAMILIES.values() for e in f.examples)
    raise ValueError(f"Unknown model {name!r}. Valid names: {patterns} (e.g. {examples}).")


def get_model(name: str, num_classes: int = 10, dtype: Any = jnp.float32) -> nn.Module:
    """The Flax module registered under `name`; raises ValueError listing valid names."""
    family, match = _match(name)
    return family.build(*match.groups(), num_classes=num_classes, dtype=dtype)


def family_of(model) -> Family:
    """The Family of a module or model name; ValueError for models outside the registry."""
    if isinstance(model, str):
        return _match(model)[0]
    family = _FAMILIES.get(getattr(model, "family", None))
    if family is None:
        raise ValueError(f"{type(model).__name__} is not a model of a registered family "
                         f"({', '.join(_FAMILIES)}); register its Family with elax.models.register.")
    return family


def model_name(model) -> str:
    """Inverse of `get_model` for registry models (used to record which model a ticket belongs to)."""
    return family_of(model).name_of(model)


def init_variables(model, key, input_shape):
    """Initial {'params', 'batch_stats'} of `model` for images of `input_shape` (H, W, C), drawn on the host CPU
    on every backend (the same values everywhere), then put on the default device uncommitted, as a jitted init's
    output would be (later programs may place it anywhere)."""
    variables = _jitted_init(model, tuple(input_shape))(jax.device_put(key, _host_cpu()))
    return jax.device_put(jax.device_get(variables))


# XLA:CPU compiles an init's threefry random draws 2-4x faster at backend optimisation level 1 than at its default
# (cifar_resnet_20_8: 3.1 s instead of 11.7 s), with bit-identical values (checked on CIFAR ResNets, VGGs and
# ImageNet ResNets; docs/performance.md). Level 0 would change the float rounding. Inits run on the host CPU on
# every backend: on an H100 a new model's setup took 15 s with its init compiled for the GPU, 3 s on the host.
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
    """{'params': ..., 'batch_stats': ...} of ShapeDtypeStructs: the init traced, not run (cheap, no compile)."""
    return jax.tree.map(lambda leaf: leaf, _traced_shapes(model, tuple(input_shape)))   # new containers


@functools.lru_cache(maxsize=32)
def _traced_shapes(model, input_shape):
    # Not through init_variables: its cached jitted init must not be created inside this trace. Cached: a trace
    # of a ResNet takes ~0.1-0.3 s, and config validation and transfers ask again for every run.
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


from elax.models import cifar_resnet, cifar_vgg, imagenet_resnet  # noqa: E402,F401  (each registers its family)

__all__ = ["BLOCK_NAME", "Family", "block_shapes", "families", "family_of", "fixed_blocks", "get_model", "init_variables",
           "model_name", "register", "stage_sizes", "variable_shapes"]
