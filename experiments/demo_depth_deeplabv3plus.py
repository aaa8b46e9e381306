"""The DeepLabv3+ baseline of `demo_depth`: same data and 600 steps, cross-entropy only.

Command:
  python launch.py --experiment demo_depth_deeplabv3plus

Hardware: a 2-core CPU. Expected (measured, seed 0): test hand/object mean IoU 42.3,
pixel accuracy 96.1 (run time in docs/results.md); `demo_depth` reaches 38.1.
"""
from experiments import demo_depth
from fanet_jax.config import Config


def get_config() -> Config:
  return demo_depth.get_config(model='deeplabv3plus_micro', contour_steps=0)
