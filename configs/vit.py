"""IMP with weight rewinding on a small Vision Transformer trained from scratch on CIFAR-10.

    python main.py --config configs/vit.py --workdir runs/vit6            # vit_6_192_p4
    python main.py --config configs/vit.py:vit_8_192_p4 --workdir runs/vit8

E-LTH has no ViT recipe; this one follows the DeiT/"ViT for small datasets" practice, each number with its reason:
- vit_6_192_p4: 8x8 patches of 4x4 pixels (64 tokens; 32/4 tiles the image), width 192 (DeiT-Tiny's), 6 heads of
  32, 6 blocks: small enough to train on one GPU in hours, deep enough to stretch and squeeze.
- AdamW, lr 1e-3 at batch 128 (DeiT's 5e-4 per 512, scaled up for a small batch as small-dataset ViTs train),
  weight decay 0.05 (DeiT), betas (0.9, 0.999).
- 200 epochs, warmup 10 epochs then cosine to 0: ViTs without convolutions' priors need long training on
  CIFAR-10, and warmup keeps AdamW's first steps stable.
- Label smoothing 0.1 (DeiT); random crop (pad 4) + flip, the CIFAR augmentation elax runs in jit (no RandAugment
  or mixup: they are not part of elax's input pipeline).
- Rewind to step 3910, the end of the warmup (5% of training): transformers are reported less stable to
  rewinding than ResNets (Chen et al. 2021), so a later rewind point than the ResNets' 1.6%.
- 20% of the remaining weights per level, globally, over attention and MLP kernels (the family's rule: patch
  embedding and head dense).
"""

from elax.config import default_config

STEPS_PER_EPOCH = 391   # ceil(50,000 / 128)


def get_config(model: str = "vit_6_192_p4"):
    config = default_config()
    config.mode = "imp"
    config.model.name = model
    config.data.name = "cifar10"
    config.train.epochs = 200
    config.train.batch_size = 128
    config.train.optimizer = "adamw"
    config.train.lr = 1e-3
    config.train.weight_decay = 0.05
    config.train.schedule = "cosine"
    config.train.warmup_epochs = 10.0
    config.train.milestones = ()
    config.train.label_smoothing = 0.1
    config.lottery.rewind_steps = 10 * STEPS_PER_EPOCH
    return config
