"""DeepLabv3+ (ResNet-50, output stride 8) on ZeroWaste-f: FANet's Table 1 baseline row.

Command:
  python launch.py --experiment zerowaste_deeplabv3plus_r50 \
      --set manual_dir=/path/to/zerowaste-f init_from=/path/to/resnet50_rgb

`init_from` names a torchvision ImageNet ResNet-50 converted with
`python -m fanet_jax.pytorch.convert --model resnet50_torchvision_rgb --input
resnet50.pth --output DIR`; without it the encoder trains from scratch.
Hardware: mmsegmentation's schedule for this model family, 40k iterations at batch 8
(4 GPUs x 2 there) with 512x512 crops; SGD, so no warm-up (docs/recipes.md section 2).
Expected: FANet's Table 1 gives DeepLabv3+ 52.13 test mIoU / 91.38 pixel accuracy
(its backbone depth is not stated there; `zerowaste_deeplabv3plus_r101` is the
ResNet-101 row). Not run by us: ZeroWaste-f is not available on the project's
machines.
"""
from fanet_jax.config import Config


def get_config(model: str = 'deeplabv3plus_r50_rgb') -> Config:
  """The recipe; `zerowaste_deeplabv3plus_r101` swaps the encoder."""
  return Config(
      dataset='zero_waste_f',
      manual_dir='data/zerowaste-f',
      model=model,
      # mmsegmentation configs/_base_/schedules/schedule_40k.py with the batch of
      # deeplabv3plus_r50-d8_4xb2-40k_cityscapes-512x1024 (4 GPUs x 2 images).
      optimizer='sgd', learning_rate=0.01, momentum=0.9, weight_decay=5e-4,
      lr_schedule='poly', poly_power=0.9, min_learning_rate=1e-4, warmup_steps=0,
      num_steps=40_000, batch_size=8,
      # Evaluation, checkpoints, crops and transforms: the Config defaults (the
      # FANet recipe's ZeroWaste-f pipeline, evaluation every 4000 steps).
  )
