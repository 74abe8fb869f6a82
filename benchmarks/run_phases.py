"""Where a CLI run's wall time goes: runs `main.py` with the given flags and prints the wall-clock total and call
count of the functions that make up a level (training, evaluation, checkpoint reads and writes, ticket making).
Plain timers, no profiler (cProfile's overhead inflates Orbax's asyncio code several times over).

    python benchmarks/run_phases.py --config configs/quickstart.py --workdir /tmp/q --config.progress=False

Totals nest (`_fit` contains `Trainer.train_steps`, `_check_finite`, ...): `_check_finite` is where the host waits
for the device to finish the steps, so on CPU it is the training compute.
"""

import collections
import functools
import importlib
import os
import runpy
import sys
import time

TIMED = [("elax.runs.loop", "_fit"), ("elax.runs.loop", "_start_from_ticket"), ("elax.runs.loop", "_check_finite"),
         ("elax.train", "Trainer.train_steps"), ("elax.train", "Trainer.evaluate"), ("elax.train", "create_state"),
         ("elax.checkpoint", "save_state"), ("elax.checkpoint", "save_tree"), ("elax.checkpoint", "restore_state"),
         ("elax.checkpoint", "load_tree"), ("elax.scores", "snip_scores"), ("elax.pruning", "permute_within_layers"),
         ("elax.models", "variable_shapes"), ("elax.config", "validate"), ("elax.data", "load"),
         ("elax.runs.context", "setup"), ("elax.report", "write_report")]


def timed(totals, counts, module_name: str, attr: str) -> None:
    """Replace module_name.attr (a function, or Class.method) by a wrapper that adds up its wall time."""
    owner, name = importlib.import_module(module_name), attr
    if "." in attr:
        cls, name = attr.split(".")
        owner = getattr(owner, cls)
    fn, key = getattr(owner, name), f"{module_name}.{attr}"

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[key] += time.perf_counter() - start
            counts[key] += 1

    setattr(owner, name, wrapper)


def main():
    totals, counts = collections.defaultdict(float), collections.Counter()
    for module_name, attr in TIMED:
        timed(totals, counts, module_name, attr)
    start = time.perf_counter()
    sys.argv = ["main.py"] + sys.argv[1:]
    try:
        runpy.run_path(os.path.join(os.path.dirname(__file__), "..", "main.py"), run_name="__main__")
    except SystemExit:
        pass
    print(f"\nwall {time.perf_counter() - start:.1f} s (after imports)", file=sys.stderr)
    for key, seconds in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"{seconds:8.2f} s {counts[key]:5d}x {key}", file=sys.stderr)


if __name__ == "__main__":
    main()
