"""The experiment configuration: one typed, frozen dataclass, and its overrides.

An experiment file (`experiments/<name>.py`) returns a `Config` from `get_config()`.
The dataclass is frozen and has no free-form fields, so a misspelt override fails
at once instead of being silently ignored. Library code receives
plain values taken from the config; models never see it.
"""
import ast
import dataclasses
import importlib
import json
import os
import typing
from typing import Any, Optional

# mmsegmentation's ImageNet statistics, RGB order (docs/data.md section 2).
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


class ConfigError(ValueError):
  """An unknown experiment, an unknown config key or a malformed value."""


POSITIVE_FIELDS = ('eval_every', 'checkpoint_every', 'keep_checkpoints', 'log_every',
                   'batch_size', 'eval_batch_size', 'grad_accum_steps',
                   'max_nonfinite_steps')


@dataclasses.dataclass(frozen=True)
class Config:
  """Everything one training + evaluation run needs. Defaults: docs/recipes.md section 2."""
  # 'segmentation' (a segmentor, scored by mIoU) or 'classification' (an ImageNet
  # classifier, scored by top-1 / top-5; docs/recipes.md section 4).
  task: str = 'segmentation'
  # Data. `modality` picks the pipeline: 'rgb' (mmseg transforms, docs/data.md section 2)
  # or 'depth' (full depth frames, flip / rotation / noise, docs/data.md section 3).
  dataset: str = 'zero_waste_f'
  modality: str = 'rgb'
  dataset_config: Optional[str] = None  # TFDS builder config, e.g. 'demo'.
  data_dir: str = 'data/tensorflow_datasets'
  manual_dir: Optional[str] = None  # Where ZeroWaste-f was unpacked.
  num_classes: int = 5
  ignore_index: int = 255
  train_split: str = 'train'
  eval_split: str = 'val'
  test_split: str = 'test'
  crop_size: tuple[int, int] = (512, 512)
  img_scale: tuple[int, int] = (2048, 512)
  ratio_range: tuple[float, float] = (0.5, 2.0)
  cat_max_ratio: float = 0.75
  flip_prob: float = 0.5
  photometric: bool = True
  size_divisor: int = 32
  mean: tuple[float, float, float] = IMAGENET_MEAN
  std: tuple[float, float, float] = IMAGENET_STD
  depth_range_mm: tuple[float, float] = (200.0, 800.0)  # normalised to [0, 1].
  rotate_degrees: float = 15.0  # depth: rotation ~ U(-r, r).
  depth_noise_mm: float = 5.0  # depth: Gaussian noise on valid depth.
  worker_count: int = 2  # grain worker processes per JAX process.
  # Classification data (ImageNet recipe; `crop_size` is the training crop and the
  # evaluation centre crop, taken after resizing the shorter side to `eval_resize`).
  eval_resize: int = 256
  randaug_num_ops: int = 2  # RandAugment ops per image (0: off).
  randaug_magnitude: float = 9.0
  randaug_mstd: float = 0.5  # std of the per-op magnitude noise.
  random_erase_prob: float = 0.25
  # Mixup / CutMix on the device batch (0 and 0: off), and label smoothing.
  mixup_alpha: float = 0.8
  cutmix_alpha: float = 1.0
  mixup_switch_prob: float = 0.5  # probability of CutMix instead of Mixup.
  label_smoothing: float = 0.1
  # Model.
  model: str = 'fanet_tiny_upernet'
  model_kwargs: dict = dataclasses.field(default_factory=dict)
  aux_weight: float = 0.5
  class_weights: Optional[tuple[float, ...]] = None  # cross-entropy class weights.
  # Two phases: `num_steps` of cross-entropy, then `contour_steps` more of
  # CE + contour_weight * contour loss from where the first phase ended.
  contour_steps: int = 0
  contour_weight: float = 0.005
  # Pretrained variables: a `python -m fanet_jax.pytorch.convert` output or an earlier run's
  # workdir; the subtrees it shares with the model (e.g. `backbone`) are copied.
  init_from: Optional[str] = None
  # Optimisation: AdamW, linear warm-up then poly decay (mmseg PolyLrUpdaterHook);
  # or Adam with L2 on BatchNorm parameters and a step decay (DenseAttentionSeg).
  batch_size: int = 2  # Global, over all processes and devices.
  num_steps: int = 40_000
  # 'adamw' (decoupled decay), 'adam_bn_l2' or 'sgd' (PyTorch's, coupled L2, momentum).
  optimizer: str = 'adamw'
  lr_schedule: str = 'poly'  # 'poly', 'step' or 'cosine' (linear warm-up, cosine).
  lr_decay_every: int = 80_000  # 'step': multiply by lr_decay_factor this often.
  lr_decay_factor: float = 0.8
  learning_rate: float = 9e-5
  betas: tuple[float, float] = (0.9, 0.999)
  momentum: float = 0.9  # 'sgd' only.
  weight_decay: float = 1e-3
  warmup_steps: int = 1500
  warmup_ratio: float = 1e-6
  poly_power: float = 0.95
  min_learning_rate: float = 1e-7
  decay_norms_and_biases: bool = True  # False: AdamW skips every 0-D / 1-D param.
  grad_clip_norm: Optional[float] = None  # clip gradients to this global norm.
  # A step whose loss or gradients are not finite is skipped (no update) and counted;
  # this many in a row stop the run with an error (nonfinite.py). The guard costs
  # train-step memory (docs/performance.md, Non-finite guard cost); skip_nonfinite=False turns it off.
  skip_nonfinite: bool = True
  max_nonfinite_steps: int = 5
  # The global batch is computed as `grad_accum_steps` micro-batches whose gradients
  # are averaged before one optimiser step (the same step, in less memory).
  grad_accum_steps: int = 1
  # 'bfloat16': bf16 activations and matmuls, float32 master weights, norms, losses.
  compute_dtype: str = 'float32'
  # Loop, evaluation and checkpoints.
  eval_every: int = 4000
  eval_batch_size: int = 1  # Global; rounded up to a multiple of the devices.
  # How a segmentor sees an evaluation image (fanet_jax/inference.py): 'whole', or
  # 'slide', windows of eval_crop (H, W) every eval_stride (H, W) pixels of the
  # rescaled image, overlapping logits averaged (mmsegmentation's mode='slide').
  eval_mode: str = 'whole'
  eval_crop: Optional[tuple[int, int]] = None
  eval_stride: Optional[tuple[int, int]] = None
  # Test-time augmentation: these ratios of the test scale, each flipped and not, the
  # views' softmax averaged (inference.TTA_SCALES: mmseg's); () for none.
  eval_tta_scales: tuple[float, ...] = ()
  checkpoint_every: int = 4000
  keep_checkpoints: int = 3
  log_every: int = 50
  # Classes whose mean IoU is reported as `fgIoU` (DenseAttentionSeg's "mean IOU"
  # of hand and object).
  foreground_classes: tuple[int, ...] = ()
  seed: int = 0
  # Keys a resumed run may change beyond fanet_jax/workdir.py's MAY_CHANGE.
  allow_config_change: tuple[str, ...] = ()

  @property
  def image_channels(self) -> int:
    """Channels of the model's input: 1 for depth maps, 3 for RGB."""
    return 1 if self.modality == 'depth' else 3

  def __post_init__(self):
    # Intervals divide step numbers and counts keep checkpoints: below 1 they would
    # fail mid-run (or delete every checkpoint), so they fail here, by name.
    for key in POSITIVE_FIELDS:
      value = getattr(self, key)
      if not isinstance(value, int) or value < 1:
        raise ConfigError(f'{key} must be a whole number of at least 1, got {value!r}')
    if self.eval_mode not in ('whole', 'slide'):
      raise ConfigError(f"eval_mode must be 'whole' or 'slide', got {self.eval_mode!r}")
    if any(not isinstance(r, (int, float)) or r <= 0 for r in self.eval_tta_scales):
      raise ConfigError(f'eval_tta_scales must be positive ratios, got '
                        f'{self.eval_tta_scales!r}')
    if self.eval_mode == 'slide':
      for key in ('eval_crop', 'eval_stride'):
        value = getattr(self, key)
        if value is None or len(value) != 2 or min(value) < 1:
          raise ConfigError(f"eval_mode 'slide' needs {key}=(H,W) of at least 1, got "
                            f'{value!r}')


def _parse_value(key: str, text: str, annotation: Any) -> Any:
  """Parses the text of an override for the field `key` of the given type."""
  origin = typing.get_origin(annotation)
  args = typing.get_args(annotation)
  if annotation is str:
    return text
  if origin is typing.Union and type(None) in args:  # Optional[X]
    if text.lower() in ('none', 'null', ''):
      return None
    inner = next(a for a in args if a is not type(None))
    return _parse_value(key, text, inner)
  if annotation is bool:
    if text.lower() in ('true', '1', 'yes'):
      return True
    if text.lower() in ('false', '0', 'no'):
      return False
    raise ConfigError(f'{key}: expected true or false, got {text!r}')
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError) as e:
    raise ConfigError(f'{key}: cannot parse {text!r} ({e})') from None
  if annotation is float and isinstance(value, int):
    value = float(value)
  if origin is tuple and isinstance(value, (list, tuple)):
    value = tuple(value)
  expected = origin or annotation
  if not isinstance(value, expected):
    raise ConfigError(
        f'{key}: expected {getattr(expected, "__name__", expected)}, got {text!r}')
  return value


def apply_overrides(config: Config, overrides: list[str]) -> Config:
  """Returns `config` with `key=value` overrides applied.

  Args:
    config: the experiment's config.
    overrides: strings `key=value`; values are Python literals (`crop_size=(64,64)`,
      `model_kwargs={'use_scm': False}`), plain text for string fields.

  Returns:
    A new Config.

  Raises:
    ConfigError: an unknown key (the message lists the valid ones) or a bad value.
  """
  fields = {f.name: f for f in dataclasses.fields(Config)}
  hints = typing.get_type_hints(Config)
  changes = {}
  for item in overrides:
    key, sep, text = item.partition('=')
    key = key.strip()
    if not sep:
      raise ConfigError(f'override {item!r} is not of the form key=value')
    if key not in fields:
      raise ConfigError(f'unknown config key {key!r}; valid keys: '
                        f'{", ".join(sorted(fields))}')
    changes[key] = _parse_value(key, text.strip(), hints[key])
  return dataclasses.replace(config, **changes)


def load_experiment(name: str) -> Config:
  """Imports `experiments/<name>.py` and returns its `get_config()`.

  Raises:
    ConfigError: no such experiment; the message lists the available ones.
  """
  available = list_experiments()
  if name not in available:
    raise ConfigError(f'unknown experiment {name!r}; available: {", ".join(available)}')
  return importlib.import_module(f'experiments.{name}').get_config()


def list_experiments() -> list[str]:
  """Names of the experiment files in `experiments/`."""
  folder = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'experiments')
  return sorted(f[:-3] for f in os.listdir(folder)
                if f.endswith('.py') and not f.startswith('_'))


def to_json(config: Config) -> str:
  """The resolved config as indented JSON (written into the workdir)."""
  return json.dumps(dataclasses.asdict(config), indent=2, sort_keys=True)


def _from_json_value(value: Any, annotation: Any) -> Any:
  """A JSON value as the field's type: lists back to tuples, ints to floats."""
  origin = typing.get_origin(annotation)
  args = typing.get_args(annotation)
  if value is None:
    return None
  if origin is typing.Union and type(None) in args:  # Optional[X]
    return _from_json_value(value, next(a for a in args if a is not type(None)))
  if origin is tuple and isinstance(value, list):
    if len(args) == 2 and args[1] is Ellipsis:
      return tuple(_from_json_value(v, args[0]) for v in value)
    return tuple(_from_json_value(v, a) for v, a in zip(value, args or [Any] * len(value)))
  if annotation is float and isinstance(value, int):
    return float(value)
  return value


def from_json(text: str, path: str = 'config.json') -> Config:
  """The Config that `to_json` wrote; fields missing from it take their defaults.

  Raises:
    ConfigError: naming `path`: not JSON, or keys this version does not know.
  """
  try:
    saved = json.loads(text)
  except json.JSONDecodeError as e:
    raise ConfigError(f'{path}: not a config written by a run ({e})') from None
  hints = typing.get_type_hints(Config)
  unknown = sorted(set(saved) - set(hints))
  if unknown:
    raise ConfigError(f'{path}: keys this version does not know: {", ".join(unknown)}')
  return Config(**{key: _from_json_value(value, hints[key]) for key, value in saved.items()})
