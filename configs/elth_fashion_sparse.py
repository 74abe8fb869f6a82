"""Elastic tickets against sparse training from scratch, and N:M tickets, on Fashion-MNIST with the recipe of
configs/elth_fashion.py (ResNet-14 -> ResNet-20, width 8, 5 levels of 50%, 3 seeds), sized for a 2-core CPU.

    python main.py --config configs/elth_fashion_sparse.py --workdir runs/elth_fashion_sparse/dst
    python main.py --config configs/elth_fashion_sparse.py:nm --workdir runs/elth_fashion_sparse/nm
    python -m elax.report runs/elth_fashion_sparse --out runs/elth_fashion_sparse/report

- dst (the default): IMP on ResNet-14 and -20, ETT 14 -> 20 (append), and on ResNet-20 at the sparsities of its
  IMP levels: random pruning at ERK's layer densities, SET and RigL (from the initialisation, ERK masks, drop
  fraction 0.3 decayed by a cosine, no updates after 75% of training; RigL's defaults but for the interval: 25
  steps instead of 100, since this recipe trains 376 steps, so that 11 updates happen instead of 2).
- nm: the same IMP and ETT runs at the 1:4 structure, reached in two levels (4 -> 2 -> 1 kept per group of 4:
  2:4 at 50% sparsity, 1:4 at 75%); the stem conv (1 input channel, which 4 does not divide) is the only layer
  left dense.
"""

import elth_fashion   # beside this file: main.py puts the config's folder on sys.path


def get_config(part: str = "dst"):
    config = elth_fashion.get_config()
    config.baseline.snip_batches = 0    # unused (no SNIP); the value its runs were made with, so they resume
    if part == "nm":
        config.lottery.structure = "1:4"
        config.lottery.levels = 2
        config.experiment.baselines = ()
    else:
        config.baseline.distribution = "erk"
        config.baseline.dst_every = 25
        config.experiment.baselines = ("random", "set", "rigl")
    return config
