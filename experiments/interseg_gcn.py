"""GCN (Large Kernel Matters, k = 9) on InterSegHands (DenseAttentionSeg paper Table 2).

Command:
  python launch.py --experiment interseg_gcn --set manual_dir=/path/to/interseg

Hardware and recipe: as interseg_dense_attention, cross-entropy only (140 epochs);
model gcn_r50 (docs/models.md section 10), trained from scratch unless
`--set init_from=DIR` names a `resnet50_torchvision` conversion (it fills the
ResNet-50 `backbone`).
Expected: the paper's Table 2: mean IOU (hand, object) 92.55. Not run by us.
"""
from experiments import interseg_dense_attention
from fanet_jax.config import Config


def get_config() -> Config:
  return interseg_dense_attention.get_config(model='gcn_r50', contour_epochs=0)
