"""DeepLabv3+ (ResNet-101, output stride 8) on ZeroWaste-f: FANet's Table 1 baseline row.

Command:
  python launch.py --experiment zerowaste_deeplabv3plus_r101 \
      --set manual_dir=/path/to/zerowaste-f init_from=/path/to/resnet101_rgb

`init_from`: torchvision's ImageNet ResNet-101 through
`python -m fanet_jax.pytorch.convert --model resnet101_torchvision_rgb ...`.
Hardware and recipe: as zerowaste_deeplabv3plus_r50 (SGD, poly 0.9, 40k iterations,
batch 8, 512x512 crops). Expected: FANet's Table 1, DeepLabv3+ 52.13 test mIoU /
91.38 pixel accuracy. Not run by us.
"""
from experiments import zerowaste_deeplabv3plus_r50
from fanet_jax.config import Config


def get_config() -> Config:
  return zerowaste_deeplabv3plus_r50.get_config(model='deeplabv3plus_r101_rgb')
