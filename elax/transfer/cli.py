"""`python -m elax.transfer SOURCE TARGET [--strategy S]`: print a transfer plan, its official mapping string and
the command that trains the transferred tickets of an IMP run."""

import argparse

from elax import exits
from elax.transfer.plans import plan, strategies


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
        return exits.error(error, exits.BAD_INPUT)
    print(block_plan)
    print(f"mapping string: {block_plan.to_string()}")
    print("To train the transferred tickets of an IMP run of the source (its recipe is reused):\n"
          "  python main.py --config configs/transfer.py --config.transfer.source=RUN_DIR "
          f"--config.model.name={block_plan.target} --config.transfer.strategy='{block_plan.strategy}' "
          "--workdir WORKDIR")
    return 0
