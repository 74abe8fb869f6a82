"""How a target sparsity is spread over a network's prunable layers, as exact kept counts per layer.

- "global": one ranking over every prunable weight decides (no per-layer counts: `pruning.prune_to_sparsity`).
- "uniform": every layer keeps the same fraction.
- "erk": Erdos-Renyi-Kernel (Evci et al. 2020, "Rigging the Lottery"): a layer's density is proportional to the
  sum of its kernel's dimensions over their product, scaled to hit the target; a layer that would be denser than
  1 is kept dense and the others are rescaled.
Counts are whole numbers that sum to exactly round((1 - sparsity) x prunable weights), each layer's as near its
density as a largest-remainder rounding allows.
"""

import math

DISTRIBUTIONS = ("global", "uniform", "erk")


def erk_densities(shapes: dict[str, tuple], sparsity: float) -> dict[str, float]:
    """{layer: density} of ERK for kernels of `shapes` at overall `sparsity` (layers capped at 1 kept dense)."""
    sizes = {name: math.prod(shape) for name, shape in shapes.items()}
    keep = (1.0 - sparsity) * sum(sizes.values())
    dense: set[str] = set()
    while True:
        raw = {name: sum(shape) / sizes[name] for name, shape in shapes.items() if name not in dense}
        scale = (keep - sum(sizes[name] for name in dense)) / sum(raw[name] * sizes[name] for name in raw)
        capped = [name for name in raw if scale * raw[name] > 1.0]
        if not capped:
            return {name: 1.0 if name in dense else scale * raw[name] for name in shapes}
        dense.add(max(capped, key=lambda name: raw[name]))   # the densest first, then solve again


def densities(shapes: dict[str, tuple], sparsity: float, distribution: str) -> dict[str, float]:
    """{layer: density} of a per-layer `distribution` ("uniform" or "erk")."""
    if distribution == "uniform":
        return {name: 1.0 - sparsity for name in shapes}
    if distribution == "erk":
        return erk_densities(shapes, sparsity)
    raise ValueError(f"distribution must be one of {', '.join(DISTRIBUTIONS[1:])} for per-layer counts, got "
                     f"{distribution!r}.")


def kept_counts(shapes: dict[str, tuple], sparsity: float, distribution: str) -> dict[str, int]:
    """{layer: weights kept}: the `distribution`'s densities as whole numbers summing to exactly
    round((1 - sparsity) x all weights) (largest remainder first, ties by layer order)."""
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}.")
    sizes = {name: math.prod(shape) for name, shape in shapes.items()}
    wanted = {name: d * sizes[name] for name, d in densities(shapes, sparsity, distribution).items()}
    counts = {name: min(sizes[name], math.floor(w)) for name, w in wanted.items()}
    short = round((1.0 - sparsity) * sum(sizes.values())) - sum(counts.values())
    order = sorted((name for name in counts if counts[name] < sizes[name]),
                   key=lambda name: -(wanted[name] - counts[name]))
    for name in order[:max(short, 0)]:
        counts[name] += 1
    return counts
