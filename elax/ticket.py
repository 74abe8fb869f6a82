"""The lottery ticket: a mask plus the (rewound) weights and BatchNorm statistics it starts from."""

import dataclasses
from typing import Any

from elax import masks as masks_lib
from elax.models import family_of


@dataclasses.dataclass(frozen=True)
class Ticket:
    """A sparse subnetwork of `model`, ready to train from step `rewind_step`.

    `params` are already masked (pruned weights are exactly 0). `model` is the Flax module; `model_name` its
    registry name (e.g. "cifar_resnet_20").
    """

    model: Any
    model_name: str
    mask: Any
    params: Any
    batch_stats: Any
    level: int = 0
    rewind_step: int = 0
    meta: dict = dataclasses.field(default_factory=dict)

    @property
    def sparsity(self) -> float:
        """Of the weights the model's family prunes (e.g. not a VGG's classifier)."""
        return masks_lib.sparsity(self.mask, self._prunable())

    def density_report(self) -> str:
        """The per-layer density table (`masks.format_report`) of the layers the model's family prunes."""
        return masks_lib.format_report(self.mask, self._prunable())

    def _prunable(self):
        return family_of(self.model).prunable

    def __repr__(self) -> str:
        return (f"Ticket({self.model_name}, level={self.level}, sparsity={self.sparsity:.2%}, "
                f"rewind_step={self.rewind_step})")
