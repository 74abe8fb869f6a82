"""IMP with weight rewinding on ImageNet ResNets, the E-LTH recipe (ELTH.md section 2): 90 epochs at batch 1024,
SGD lr 0.4, momentum 0.9, weight decay 1e-4, LR x0.1 at epochs 30, 60 and 80 after a 5-epoch linear warmup from
0, rewind to epoch 5; RandomResizedCrop 224 (scale 0.1-1, ratio 0.8-1.25) + flip, eval resize 256 / centre 224.

    python main.py --config configs/imagenet_resnet.py --workdir runs/r18 --config.data.dir=/data/imagenet
    python main.py --config configs/imagenet_resnet.py:26 --workdir runs/r26 ...    # 18, 26, 34, 50, 101, 152

ImageNet is streamed from disk by Grain (data.source=auto picks it): data.dir is either an ImageFolder tree
(train/<wnid>/*.JPEG, val/<wnid>/*.JPEG) or a tensorflow_datasets data dir where imagenet2012 was prepared in
array_record format. Several hosts: see "Multi-host runs" in docs/scaling.md.
"""

from elax.config import default_config

STEPS_PER_EPOCH = 1252   # ceil(1,281,167 / 1024)


def get_config(depth: str = "18"):
    config = default_config()
    config.mode = "imp"
    config.model.name = f"imagenet_resnet_{int(depth)}"
    config.data.name = "imagenet2012"
    config.data.image_size, config.data.resize_size = 224, 256
    config.data.crop_scale, config.data.crop_ratio = (0.1, 1.0), (0.8, 1.25)
    config.train.epochs = 90
    config.train.batch_size = 1024
    config.train.lr = 0.4
    config.train.milestones = (30, 60, 80)
    config.train.warmup_epochs = 5.0
    config.train.eval_batch_size = 1000
    config.lottery.rewind_steps = 5 * STEPS_PER_EPOCH
    return config
