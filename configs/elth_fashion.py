"""The E-LTH experiment on Fashion-MNIST (real 28x28 clothes images), sized for a 2-core CPU: IMP on ResNet-14
(width 8, the source) and ResNet-20 (width 8, the target), ETT 14 -> 20 (append), and the random, reinit and SNIP
baselines on ResNet-20 at the sparsities of its own IMP levels, for three seeds; one report with mean ± std over
the seeds, error bars and the claims.

    apt-get install -y dataset-fashion-mnist                 # the 60k + 10k IDX files, where elax looks
    python main.py --config configs/elth_fashion.py --workdir runs/elth_fashion

Why these numbers (measured on the 2-core CPU with jax 0.10.2, 2026-11-26; details in
docs/results/fashion_mnist/README.md):
- One seed is 33 trainings (IMP 6 + 6, ETT 6, baselines 3 x 5). At the ~500-650 images/s a width-8 ResNet-20
  trains at here, a seed fits in 20-40 minutes only with ~22k images seen per training: a fixed subset of 12,000
  training images (the same for every seed; the test set is the full 10,000) for 2 epochs at batch 64, lr 0.05,
  x0.1 after 1.5 epochs, no augmentation (augmentation did not help at this budget: 86.5% after 10 epochs with it,
  still underfitting).
- Dense test accuracy measured with this recipe: 83.4% (ResNet-20) and 83.7% (ResNet-14). The 89% a width-8
  ResNet reaches on all 60k images for 2 epochs (90.2% measured) would take ~5x longer per seed.
- 5 levels of 50% (the paper: 20% per level) reach 96.9% sparsity: 50, 75, 87.5, 93.75, 96.9%.
- Rewind to step 38 (10% of training, as the paper's 1000 of 62,400 steps is ~1.6%, and OpenLTH's CIFAR runs
  rewind within the first epoch).
"""

from elax.config import default_config


def get_config():
    config = default_config()
    config.mode = "experiment"
    config.model.name = "cifar_resnet_14_8"
    config.data.name = "fashion_mnist"
    config.data.augment = False
    config.data.train_subset = 12_000
    config.train.epochs = 2
    config.train.batch_size = 64
    config.train.lr = 0.05
    config.train.milestones = (1.5,)
    config.train.eval_batch_size = 1000
    config.train.eval_every_epochs = 100   # only the final epoch's test accuracy (the record) is computed
    config.lottery.levels = 5
    config.lottery.prune_fraction = 0.5
    config.lottery.rewind_steps = 38
    config.baseline.snip_batches = 20      # SNIP sums |g * w| over 20 training batches (1,280 images)
    config.experiment.source_model = "cifar_resnet_14_8"
    config.experiment.target_models = ("cifar_resnet_20_8",)
    config.experiment.baselines = ("random", "reinit", "snip")
    config.experiment.seeds = (0, 1, 2)
    return config
