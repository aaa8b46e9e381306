"""DenseAttentionSeg without dense attention (paper Table 3's ablation) on InterSegHands.

Command:
  python launch.py --experiment interseg_no_attention --set manual_dir=/path/to/interseg

Hardware and recipe: as interseg_dense_attention, with `attention='none'`: the
SqueezeNet units' features go to the decoder unweighted.
Expected: the paper's Table 3 row without dense attention. Not run by us.
"""
from experiments import interseg_dense_attention
from fanet_jax.config import Config


def get_config() -> Config:
  return interseg_dense_attention.get_config(attention='none')
