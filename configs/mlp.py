"""The lottery ticket hypothesis's first experiment: IMP on LeNet-300-100 on MNIST (Frankle & Carbin 2019).

    python main.py --config configs/mlp.py --config.data.dir=DIR_WITH_MNIST_IDX_FILES --workdir runs/lenet
    python main.py --config configs/mlp.py:fashion_mnist --workdir runs/lenet_fashion   # apt-get's Fashion-MNIST

Their recipe, and where elax differs:
- LeNet-300-100 (`mlp_300_100`: 784-300-100-10, ReLU), Gaussian Glorot init, no augmentation.
- Adam, lr 1.2e-3 (`optimizer=adamw` with weight decay 0 is Adam), batch 60, 50,000 iterations (50 epochs of
  1,000 iterations), a constant learning rate.
- Prune 20% of the remaining weights per level in every hidden layer, each on its own (layer-wise), and 10% in
  the output layer (`lottery.layer_fractions`); 20 levels reach 98.8% sparsity in the hidden layers.
- Rewind to iteration 0 (the original hypothesis: the surviving weights reset to their initialisation).
- elax differs in two ways: the record is the test accuracy at the end of training, where they also report the
  iteration of early stopping by validation loss; and pruning removes exactly ceil(20%) of the remaining weights
  of a layer, where their code keeps those above the 20th percentile (ties can differ by a weight).
"""

from elax.config import default_config


def get_config(dataset: str = "mnist"):
    config = default_config()
    config.mode = "imp"
    config.model.name = "mlp_300_100"
    config.data.name = dataset
    config.data.augment = False
    config.train.epochs = 50
    config.train.batch_size = 60
    config.train.optimizer = "adamw"
    config.train.lr = 1.2e-3
    config.train.weight_decay = 0.0
    config.train.milestones = ()
    config.train.eval_batch_size = 1000
    config.lottery.levels = 20
    config.lottery.prune_fraction = 0.2
    config.lottery.scope = "layer"
    config.lottery.layer_fractions = (("head", 0.1),)
    config.lottery.rewind_steps = 0
    return config
