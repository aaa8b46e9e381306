"""Ablation (paper Table 2) on ZeroWaste-f: +FRM high: only the high-frequency FRM branch (no SCM).

Command:
  python launch.py --experiment ablation_frm_high --set manual_dir=/path/to/zerowaste-f

Hardware and recipe: as zerowaste_fanet_tiny (one GPU, 40k steps, batch 2, crop 512).
Expected: the paper's Table 2 row; not run by us (ZeroWaste-f is not on our machines).
"""
from experiments import zerowaste_fanet_tiny
from fanet_jax.config import Config


def get_config() -> Config:
  return zerowaste_fanet_tiny.get_config(use_scm=False, use_frm_high=True, use_frm_low=False)
