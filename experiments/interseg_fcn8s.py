"""The FCN-8s (VGG-16) baseline on InterSegHands (DenseAttentionSeg paper Table 2).

Command:
  python launch.py --experiment interseg_fcn8s --set manual_dir=/path/to/interseg

Hardware and recipe: as interseg_dense_attention, cross-entropy only (140 epochs);
model fcn8s_vgg16 (docs/models.md section 8), trained from scratch unless
`--set init_from=DIR` names a `vgg16_torchvision` conversion.
Expected: the paper's Table 2: mean IOU (hand, object) 91.58, 33.5 ms a frame.
Not run by us.
"""
from experiments import interseg_dense_attention
from fanet_jax.config import Config


def get_config() -> Config:
  return interseg_dense_attention.get_config(model='fcn8s_vgg16', contour_epochs=0)
