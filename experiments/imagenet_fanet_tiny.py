"""FANet-tiny pretrained on ImageNet-1K: the paper's recipe (docs/recipes.md section 4).

Command (one host, all of its GPUs in one process):
  python launch.py --experiment imagenet_fanet_tiny --set data_dir=/data/tfds
Command (2 hosts x 8 GPUs = 16 GPUs, as the paper): `sbatch scripts/slurm_imagenet.sh`,
one process per GPU; see docs/training.md section 5.

Data: TFDS `imagenet2012` prepared once as array_record
(`python -m input_pipeline.imagenet prepare --manual_dir DIR --data_dir DIR`, which
needs TensorFlow; training does not).
Recipe: 300 epochs at a global batch of 1280 (16 GPUs x 80; 1000 steps an epoch,
the last partial batch dropped), AdamW lr 1e-3, weight decay 0.05 on every weight
of 2 or more dimensions (none on norms and biases), cosine decay after 20 warm-up
epochs (Swin's warm-up start and floor, scaled to this batch: 1e-6 and 1e-5), label
smoothing 0.1, RandAugment m9 / mstd 0.5, Mixup 0.8 / CutMix 1.0 (switch 0.5),
random erasing 0.25, stochastic depth 0.1, gradients clipped at norm 5, 224 crops;
evaluation resize 256 + centre crop 224 after every epoch, best top-1 kept.
bf16 compute with float32 master weights and norms (Swin trains with AMP); with fewer
than 16 GPUs keep the global batch by `--set grad_accum_steps=2` (8 GPUs) etc.
Expected: paper Table 4, 82.5 top-1 (FocalNet-T 82.3). Not run here (no GPUs, no
ImageNet on this machine): the recipe's pieces are tested on CPU (tests/).
Then: `python launch.py --experiment zerowaste_fanet_tiny --set
init_from=workdirs/imagenet_fanet_tiny` fine-tunes the segmentor from its backbone.
"""
from fanet_jax.config import Config

STEPS_PER_EPOCH = 1_281_167 // 1280


def get_config() -> Config:
  return Config(
      task='classification',
      dataset='imagenet2012',
      num_classes=1000,
      train_split='train',
      eval_split='validation',
      test_split='validation',
      model='fanet_tiny_classifier',  # stochastic depth 0.1 is the variant's default
      crop_size=(224, 224),
      eval_resize=256,
      randaug_num_ops=2,
      randaug_magnitude=9.0,
      randaug_mstd=0.5,
      random_erase_prob=0.25,
      mixup_alpha=0.8,
      cutmix_alpha=1.0,
      mixup_switch_prob=0.5,
      label_smoothing=0.1,
      worker_count=8,
      batch_size=1280,
      num_steps=300 * STEPS_PER_EPOCH,
      optimizer='adamw',
      learning_rate=1e-3,
      weight_decay=0.05,
      decay_norms_and_biases=False,
      lr_schedule='cosine',
      warmup_steps=20 * STEPS_PER_EPOCH,
      warmup_ratio=1e-3,
      min_learning_rate=1e-5,
      grad_clip_norm=5.0,
      compute_dtype='bfloat16',
      eval_every=STEPS_PER_EPOCH,
      eval_batch_size=1280,
      checkpoint_every=STEPS_PER_EPOCH,
      keep_checkpoints=3,
      log_every=100,
  )
