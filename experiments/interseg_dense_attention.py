"""DenseAttentionSeg on InterSegHands: the paper's recipe (docs/recipes.md section 3).

Command:
  python launch.py --experiment interseg_dense_attention --set manual_dir=/path/to/interseg

The data folder holds `{train,val}/depth/*.png` (16-bit mm) and `{train,val}/mask/*.png`
(0 background, 1 hand, 2 object), e.g. as `python -m input_pipeline.annotate` exports.
Hardware: one GPU; 140 epochs of cross-entropy then 10 epochs with the contour loss
at batch 4 on 640x480 frames (46,720 training frames: 11,680 steps an epoch).
Expected: the paper's Table 2 (InterSegHands val): mean IOU (hand, object) 93.94,
pixel accuracy 99.75, with the contour loss. Not run by us: InterSegHands is not
public and there is no GPU here. We evaluate on `val` (the paper's split).
"""
from fanet_jax.config import Config

STEPS_PER_EPOCH = 46_720 // 4


def get_config(model: str = 'dense_attention_seg_r50', attention: str = 'residual',
               contour_epochs: int = 10) -> Config:
  """The recipe; `interseg_deeplabv3plus` and `interseg_no_attention` vary it."""
  model_kwargs = {'attention': attention} if model.startswith('dense_attention') else {}
  return Config(
      dataset='inter_seg_hands', modality='depth', manual_dir='data/interseg',
      num_classes=3, test_split='val', foreground_classes=(1, 2),
      model=model, model_kwargs=model_kwargs, class_weights=(1.0, 5.0, 5.0),
      batch_size=4, num_steps=140 * STEPS_PER_EPOCH,
      contour_steps=contour_epochs * STEPS_PER_EPOCH, contour_weight=0.005,
      optimizer='adam_bn_l2', weight_decay=1e-3, learning_rate=1e-3,
      lr_schedule='step', lr_decay_every=80_000, lr_decay_factor=0.8,
      # Augmentation: flip, rotation, Gaussian depth noise (the paper's three).
      flip_prob=0.5, rotate_degrees=15.0, depth_noise_mm=5.0,
      depth_range_mm=(200.0, 800.0),
      eval_every=STEPS_PER_EPOCH, eval_batch_size=8, checkpoint_every=2000,
      log_every=100)
