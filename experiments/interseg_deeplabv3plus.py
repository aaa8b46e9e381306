"""The DeepLabv3+ (ResNet-50, output stride 16) baseline on InterSegHands (paper Table 2).

Command:
  python launch.py --experiment interseg_deeplabv3plus --set manual_dir=/path/to/interseg

Hardware and recipe: as interseg_dense_attention, cross-entropy only (140 epochs).
Expected: the paper's Table 2: mean IOU (hand, object) 92.76. Not run by us.
"""
from experiments import interseg_dense_attention
from fanet_jax.config import Config


def get_config() -> Config:
  return interseg_dense_attention.get_config(model='deeplabv3plus_r50', contour_epochs=0)
