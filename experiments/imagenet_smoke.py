"""The ImageNet recipe at CPU size: FANet-micro on the generated synthetic_imagenet.

Command:
  python launch.py --experiment imagenet_smoke

Every piece of `imagenet_fanet_tiny` (RandAugment, random erasing, Mixup / CutMix,
label smoothing, cosine schedule with warm-up, no decay on norms and biases, gradient
clipping, top-1 / top-5 evaluation, best checkpoint) on 10 classes of 48-96 px
images (400 train / 100 validation), 64 crops (eval: resize 73, centre crop 64), in
float32 (bf16 gives no speed on a CPU). The tests run it smaller still.
Hardware: a 2-core CPU: minutes (run time in docs/results.md). Expected: validation top-1 90.0, top-5 99.0 with seed 0 (41 / 84 / 89 / 90
at steps 150 / 300 / 450 / 600). No paper number: the data set is our own, and an
easy one (hue nearly decides the class); it checks the pipeline, not the recipe.
"""
from fanet_jax.config import Config


def get_config() -> Config:
  return Config(
      task='classification',
      dataset='synthetic_imagenet',
      dataset_config='demo',
      num_classes=10,
      train_split='train',
      eval_split='validation',
      test_split='validation',
      model='fanet_micro_classifier',
      crop_size=(64, 64),
      eval_resize=73,  # 64 / 0.875, the recipe's crop ratio
      worker_count=0,
      batch_size=32,
      num_steps=600,
      optimizer='adamw',
      learning_rate=2e-3,
      weight_decay=0.05,
      decay_norms_and_biases=False,
      lr_schedule='cosine',
      warmup_steps=30,
      warmup_ratio=1e-3,
      min_learning_rate=1e-5,
      grad_clip_norm=5.0,
      eval_every=150,
      eval_batch_size=100,
      checkpoint_every=150,
      keep_checkpoints=2,
      log_every=10,
  )
