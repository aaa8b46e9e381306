"""The DeepLabv3+ baseline of `demo_depth`: same data and 600 steps, cross-entropy only.

Command:
  python launch.py --experiment demo_depth_deeplabv3plus

Hardware: a 2-core CPU. Expected: see README, beside `demo_depth`.
"""
from experiments import demo_depth
from fanet_jax.config import Config


def get_config() -> Config:
  return demo_depth.get_config(model='deeplabv3plus_micro', contour_steps=0)
