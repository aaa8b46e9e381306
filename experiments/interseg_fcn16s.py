"""The FCN-16s (VGG-16) baseline on InterSegHands (DenseAttentionSeg paper Table 2).

Command:
  python launch.py --experiment interseg_fcn16s --set manual_dir=/path/to/interseg

Hardware and recipe: as interseg_dense_attention, cross-entropy only (140 epochs);
model fcn16s_vgg16 (docs/models.md section 8), trained from scratch unless
`--set init_from=DIR` names a `vgg16_torchvision` conversion.
Expected: the paper's Table 2: mean IOU (hand, object) 87.59, 35.6 ms a frame.
Not run by us.
"""
from experiments import interseg_dense_attention
from fanet_jax.config import Config


def get_config() -> Config:
  return interseg_dense_attention.get_config(model='fcn16s_vgg16', contour_epochs=0)
