"""A trained segmentor, as the commands that use one load it (evaluate, predict, export).

Two sources:
- a run: `--workdir W [--checkpoint best|latest|STEP]`: the config is the run's
  `W/config.json`, the variables those of its best checkpoint (default), of its
  newest one, or of a step;
- converted weights: `--experiment NAME --weights DIR [--set key=value ...]`: the
  config is the experiment's (with the overrides: e.g. `manual_dir` for the data set),
  the variables a variables checkpoint as `python -m fanet_jax.pytorch.convert` writes
  from a PyTorch checkpoint (or another run's workdir: its best checkpoint).

Either way the variables are checked against the model before anything runs: a
backbone-only checkpoint, or one of another model or width, is one line naming what
is missing, not an error deep inside Flax.
"""
import argparse
import dataclasses
import os
import sys
from typing import Any, Callable

from fanet_jax.config import Config


class RunError(ValueError):
  """A run, weights or option that cannot be used: one line, exit 2."""


def one_line_errors() -> tuple[type[Exception], ...]:
  """The errors of loading a trained model and its data that the commands print as
  one line (exit 2): a bad run, weights, checkpoint, config or data example."""
  from fanet_jax.checkpoints import CheckpointError
  from fanet_jax.config import ConfigError
  from fanet_jax.pretrained import PretrainedError
  from input_pipeline.errors import DataError
  return RunError, CheckpointError, ConfigError, PretrainedError, DataError


@dataclasses.dataclass(frozen=True)
class Trained:
  """A segmentor's config and variables, and where they came from."""
  config: Config
  variables: Any           # {'params', 'batch_stats'}, numpy arrays
  model: Any               # the Flax module (trainer.build_model)
  step: int | None         # the checkpoint's step (None for converted weights)
  origin: str              # 'workdirs/demo, checkpoint best (step 600)', ...


def run_command(work: Callable[[], Any]) -> tuple[int, Any]:
  """(0, work()), or (2, None) after printing `error: <one line>` to stderr when it
  raises one of `one_line_errors`: the body of the commands' `main`."""
  from absl import flags
  flags.FLAGS.mark_as_parsed()  # grain (reading a split) reads absl flags
  try:
    return 0, work()
  except one_line_errors() as e:
    print(f'error: {e}', file=sys.stderr)
    return 2, None


def add_arguments(parser: argparse.ArgumentParser) -> None:
  """The options that name a trained model: a run, or an experiment and its weights."""
  group = parser.add_argument_group(
      'the model', 'a training run (--workdir), or an experiment with converted '
      'weights (--experiment and --weights)')
  group.add_argument('--workdir', default=None, help="a training run's folder")
  group.add_argument('--checkpoint', default='best',
                     help="with --workdir: best (default), latest, or a step number")
  group.add_argument('--experiment', default=None,
                     help='with --weights: the experiment whose model and data the '
                     'weights are for (a name in experiments/)')
  group.add_argument('--weights', default=None,
                     help='a variables checkpoint, as python -m fanet_jax.pytorch.convert '
                     'writes it')
  group.add_argument('--set', dest='overrides', action='append', nargs='+', default=[],
                     metavar='KEY=VALUE', help='with --experiment: override config '
                     'fields, e.g. --set manual_dir=/data/zerowaste-f')


def add_inference_arguments(parser: argparse.ArgumentParser) -> None:
  """The options of the inference mode (`inference_overrides` reads them)."""
  group = parser.add_argument_group(
      'inference', "how the model sees an image (default: the config's eval_* fields)")
  group.add_argument('--mode', choices=('whole', 'slide'), default=None,
                     help='whole image, or sliding windows')
  group.add_argument('--crop', type=int, nargs=2, metavar=('H', 'W'), default=None,
                     help='slide: window size, in pixels of the rescaled image')
  group.add_argument('--stride', type=int, nargs=2, metavar=('H', 'W'), default=None,
                     help='slide: window step')
  group.add_argument('--tta', action='store_true',
                     help='test-time augmentation: scales 0.5-1.75 of the test scale, '
                     'each flipped and not, softmax averaged')
  group.add_argument('--tta-scales', dest='tta_scales', type=float, nargs='+',
                     default=None, metavar='R',
                     help='test-time augmentation at these ratios instead (implies --tta)')


def inference_overrides(args: argparse.Namespace) -> dict:
  """The config fields that `add_inference_arguments`' options set."""
  from fanet_jax import inference
  overrides = {}
  if args.mode is not None:
    overrides['eval_mode'] = args.mode
  if args.crop is not None:
    overrides['eval_crop'] = tuple(args.crop)
  if args.stride is not None:
    overrides['eval_stride'] = tuple(args.stride)
  if args.tta or args.tta_scales:
    overrides['eval_tta_scales'] = tuple(args.tta_scales or inference.TTA_SCALES)
  return overrides


def run_config(workdir: str) -> Config:
  """The config of the run in `workdir` (its config.json)."""
  from fanet_jax import config as config_lib
  path = os.path.join(workdir, 'config.json')
  if not os.path.isdir(workdir):
    raise RunError(f'{workdir}: no such folder; give the --workdir of a run')
  if not os.path.exists(path):
    raise RunError(f'{path}: missing; is {workdir} the workdir of a training run?')
  with open(path) as f:
    return config_lib.from_json(f.read(), path)


def _check_fits(model, config: Config, variables: dict, origin: str) -> None:
  """Raises RunError unless `variables` has every variable the model's inference uses,
  in its shape (extra ones, e.g. the auxiliary head's, are fine)."""
  import jax
  import jax.numpy as jnp
  from flax import traverse_util
  expected = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, 64, 64, config.image_channels)), train=False))
  missing, wrong = [], []
  for collection in ('params', 'batch_stats'):
    have = traverse_util.flatten_dict(dict(variables.get(collection) or {}), sep='/')
    for name, leaf in traverse_util.flatten_dict(
        dict(expected.get(collection, {})), sep='/').items():
      if name not in have:
        missing.append(f'{collection}/{name}')
      elif tuple(have[name].shape) != tuple(leaf.shape):
        wrong.append(f'{collection}/{name} {tuple(have[name].shape)} (model: '
                     f'{tuple(leaf.shape)})')
  if missing or wrong:
    listed = (missing + wrong)[:3]
    more = len(missing) + len(wrong) - len(listed)
    raise RunError(
        f'{origin}: the weights do not fit model {config.model!r}: '
        + (f'{len(missing)} variables missing, ' if missing else '')
        + (f'{len(wrong)} of another shape, ' if wrong else '')
        + 'e.g. ' + '; '.join(listed) + (f' and {more} more' if more else '')
        + ' (a backbone-only checkpoint cannot segment; convert the whole segmentor)')


def load(args: argparse.Namespace, overrides: dict | None = None) -> Trained:
  """The segmentor named by `add_arguments`' options, with `overrides` (config fields
  such as evaluation settings) applied.

  Raises:
    RunError, ConfigError, CheckpointError, PretrainedError: one line each.
  """
  from fanet_jax import checkpoints, pretrained, trainer
  from fanet_jax import config as config_lib
  overrides = overrides or {}
  if bool(args.workdir) == bool(args.experiment or args.weights):
    raise RunError('give either --workdir (a training run) or --experiment and '
                   '--weights (converted weights)')
  if args.workdir:
    if args.overrides:
      raise RunError("--set goes with --experiment; a run's config is its config.json")
    config = run_config(args.workdir)
  else:
    if not (args.experiment and args.weights):
      raise RunError('--experiment and --weights go together: the experiment gives the '
                     'model and data, the weights its variables')
    config = config_lib.apply_overrides(
        config_lib.load_experiment(args.experiment),
        [item for group in args.overrides for item in group])
  if config.task != 'segmentation':
    raise RunError(f'{args.workdir or args.experiment}: a {config.task} model; this '
                   'command takes segmentation models')
  if args.workdir:
    step, path = checkpoints.state_path(args.workdir, args.checkpoint)
    origin = f'{args.workdir}, checkpoint {args.checkpoint} (step {step})'
  else:
    step, path, origin = None, args.weights, args.weights
  config = dataclasses.replace(config, **overrides)
  variables = pretrained.load_variables(path)
  model = trainer.build_model(config)
  _check_fits(model, config, variables, origin)
  return Trained(config, variables, model, step, origin)
