"""Elastic ticket transformation (E-LTH): move a ticket to a deeper or shallower member of its family.

A `Plan` (`elax.transfer.plans`) says, stage by stage, which source block every target block `stage{s}_block{b}`
copies; `apply(plan, tree)` performs that copy on any tree shaped like the source params, and `transfer_ticket`
moves a whole `Ticket` (`elax.transfer.trees`). Stem, head and the number of stages are kept, and block 0 of a
stage (the downsampling block) only ever maps to block 0 (ELTH.md section 4). Which blocks are free to replicate
or drop follows from shapes (`elax.models.fixed_blocks`).

From a shell, `python -m elax.transfer SOURCE TARGET [--strategy S]` prints a plan and its mapping string.
"""

from elax.transfer.trees import OPTIONS, REPLICA_MASKS, WEIGHTS, apply, option_problem, transfer_ticket
from elax.transfer.cli import main
from elax.transfer.plans import STRATEGIES, Plan, Strategy, check_transferable, plan, strategies

__all__ = ["OPTIONS", "Plan", "REPLICA_MASKS", "STRATEGIES", "Strategy", "WEIGHTS", "apply", "check_transferable",
           "main", "option_problem", "plan", "strategies", "transfer_ticket"]
