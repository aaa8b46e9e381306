"""The embedded default: a small FANet + UperNet on the synthetic cluttered-waste set.

Command:
  python launch.py            (the same as: python launch.py --experiment demo)

Hardware: a 2-core CPU, no GPU: minutes (the measured run time is in
docs/results.md).
Expected: test mIoU 60.8 (aAcc 85.2) with seed 0, measured on that machine; val mIoU
climbs 39.3 / 53.1 / 59.5 / 61.8 at steps 250 / 500 / 750 / 1000. A nearest-class-mean
colour classifier reaches 8.9 on the same test split. There is no paper number: the data set
is our own stand-in for ZeroWaste-f (same 5 classes and palette).
"""
from fanet_jax.config import Config


def get_config() -> Config:
  return Config(
      dataset='synthetic_waste',
      dataset_config='demo',
      model='fanet_micro_upernet',
      # 96x96 frames: rescale by 0.5-2.0 keeping the ratio, 64x64 crops.
      img_scale=(192, 96),
      crop_size=(64, 64),
      worker_count=0,
      # From scratch, not fine-tuning: a larger learning rate and a short warm-up.
      batch_size=16,
      num_steps=1000,
      learning_rate=2e-3,
      weight_decay=1e-2,
      warmup_steps=50,
      eval_every=250,
      eval_batch_size=20,
      checkpoint_every=125,
      keep_checkpoints=2,
      log_every=10,
  )
