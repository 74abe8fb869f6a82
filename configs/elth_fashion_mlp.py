"""E-LTH on MLPs, on Fashion-MNIST (real 28x28 clothes images), sized for a 2-core CPU: IMP on mlp_2x300 and
mlp_4x300, ETT 2 -> 4 (append), then, in the same workdir, ETT 4 -> 2 (drop_last), each against the receiving
model's own IMP tickets and its random, reinit and SNIP baselines, for seeds 0, 1, 2.

    python main.py --config configs/elth_fashion_mlp.py --workdir runs/elth_fashion_mlp           # stretch 2 -> 4
    python main.py --config configs/elth_fashion_mlp.py:squeeze --workdir runs/elth_fashion_mlp   # squeeze 4 -> 2

The recipe is Frankle & Carbin's for LeNet-300-100 (configs/mlp.py: Adam 1.2e-3, batch 60, layer-wise pruning with
the output layer at half the rate), on the ResNet and ViT evidence's budget: a fixed 12,000-image training subset,
4 epochs (800 steps), rewind to step 80 (10% of training), 5 levels of 50% (25% for the head).
"""

from elax.config import default_config


def get_config(direction: str = "stretch"):
    config = default_config()
    config.mode = "experiment"
    shallow, deep = "mlp_2x300", "mlp_4x300"
    config.model.name = shallow
    config.data.name = "fashion_mnist"
    config.data.augment = False
    config.data.train_subset = 12_000
    config.train.epochs = 4
    config.train.batch_size = 60
    config.train.optimizer = "adamw"
    config.train.lr = 1.2e-3
    config.train.weight_decay = 0.0
    config.train.milestones = ()
    config.train.eval_batch_size = 1000
    config.train.eval_every_epochs = 100   # only the final epoch's test accuracy (the record) is computed
    config.lottery.levels = 5
    config.lottery.prune_fraction = 0.5
    config.lottery.scope = "layer"
    config.lottery.layer_fractions = (("head", 0.25),)
    config.lottery.rewind_steps = 80
    config.baseline.snip_batches = 20
    if direction == "squeeze":
        config.experiment.source_model, config.experiment.target_models = deep, (shallow,)
        config.transfer.strategy = "drop_last"
    else:
        config.experiment.source_model, config.experiment.target_models = shallow, (deep,)
    config.experiment.baselines = ("random", "reinit", "snip")
    config.experiment.seeds = (0, 1, 2)
    return config
