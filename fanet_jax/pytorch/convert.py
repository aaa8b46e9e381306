"""PyTorch <-> Flax weight conversion for the FANet models (docs/models.md sections 1-2).

Reads the reference's checkpoints (the ImageNet-1K classifier's `model_best.pth.tar`,
mmsegmentation FANet + UperNet segmentors) into the variables of a factory model, and
writes our variables back as a reference state dict:

  python -m fanet_jax.pytorch.convert --model fanet_tiny --input model_best.pth.tar --output DIR
  python -m fanet_jax.pytorch.convert --model fanet_tiny_upernet --input DIR --output out.pth \\
      --to torch
  python -m fanet_jax.pytorch.convert --model resnet50_torchvision --input resnet50.pth \\
      --output DIR
  python -m fanet_jax.pytorch.convert --model vgg16_torchvision --input vgg16.pth \\
      --output DIR

`resnet50_torchvision` reads torchvision's ImageNet `resnet50` state dict into the
`backbone` (the 1-channel ResNet-50 encoder) of `dense_attention_seg_r50` /
`deeplabv3plus_r50`, the RGB stem filters summed into the depth channel
(`names.rgb_to_depth_stem`); `fc.*` is reported unused. `resnet50_torchvision_rgb` and
`resnet101_torchvision_rgb` read torchvision's `resnet50` / `resnet101` unchanged
into the RGB encoders of `deeplabv3plus_r50_rgb` / `deeplabv3plus_r101_rgb`.
`vgg16_torchvision` reads torchvision's ImageNet `vgg16` into the `backbone` of the FCN
models (`fcn*s_vgg16`): `features.*` by a rename (the RGB stem summed likewise), the
Linear fc6 / fc7 (`classifier.0` / `classifier.3`) reshaped into convs
(`names.vgg_fc_to_conv`); `classifier.6` is reported unused.

FocalNet (docs/models.md section 9): the release's checkpoints ({'model': state dict})
convert by a rename, `focalnet_tiny_lrf` / `focalnet_base_lrf` for the ImageNet
classifiers, `focalnet_*_lrf_upernet` for its mmseg segmentors. `focalnet_tiny_lrf_backbone`
(and `_base_`, `focalnet_test_backbone`) reads a classifier checkpoint into the
`backbone` of the matching UperNet segmentor, as the release's segmentation loader
does: focal kernels zero-padded to the segmentor's (`names.pad_focal_kernel`), the
per-stage output norms `norm{i}` left at their init (ones, zeros) with a warning,
`norm.*` / `head.*` reported unused.

The Orbax output is what `launch.py --set init_from=DIR` reads
(`fanet_jax.pretrained`). Names and layouts are mapped in `names.py`; state-dict
files are read and written by `state_dict.py` (`load_state_dict_file` and
`save_state_dict_file` are re-exported here), which imports torch only for `.pth`
files.
"""
import argparse
import functools
import os
import sys
import warnings
from typing import Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from fanet_jax import models, pretrained
from fanet_jax.pytorch.names import NUM_BATCHES_TRACKED, TORCHVISION_STEM, Table
from fanet_jax.pytorch.names import TORCHVISION_VGG_FC, TORCHVISION_VGG_STEM
from fanet_jax.pytorch.names import build_table, conv_to_vgg_fc, rgb_to_depth_stem
from fanet_jax.pytorch.names import vgg_fc_to_conv
from fanet_jax.pytorch.names import FOCALNET_OUT_NORM, pad_focal_kernel
from fanet_jax.pytorch.names import to_flax_layout, to_torch_layout
from fanet_jax.pytorch.state_dict import ConvertError, check_writable
from fanet_jax.pytorch.state_dict import load_state_dict_file, save_state_dict_file
from fanet_jax.models.classifier import ImageClassifier


# Converter names for torchvision ResNet checkpoints -> the factory model whose
# `backbone` subtree they fill (the ResNet-50 encoders of dense_attention_seg_r50 and
# deeplabv3plus_r50 are the same tree).
TORCHVISION_RESNETS = {'resnet50_torchvision': 'dense_attention_seg_r50',
                       'resnet50': 'dense_attention_seg_r50',
                       # RGB encoders (stem kept as it is) of the ZeroWaste-f baselines.
                       'resnet50_torchvision_rgb': 'deeplabv3plus_r50_rgb',
                       'resnet101_torchvision_rgb': 'deeplabv3plus_r101_rgb'}
# torchvision VGG-16 -> the `backbone` (VGG-16 features + conv fc6 / fc7) shared by
# fcn32s_vgg16, fcn16s_vgg16 and fcn8s_vgg16.
TORCHVISION_VGGS = {'vgg16_torchvision': 'fcn8s_vgg16', 'vgg16': 'fcn8s_vgg16'}
TORCHVISION = {**TORCHVISION_RESNETS, **TORCHVISION_VGGS}
# The release's FocalNet ImageNet checkpoints -> the `backbone` of a FocalNet segmentor.
FOCALNET_BACKBONES = {'focalnet_tiny_lrf_backbone': 'focalnet_tiny_lrf_upernet',
                      'focalnet_base_lrf_backbone': 'focalnet_base_lrf_upernet',
                      'focalnet_test_backbone': 'focalnet_test_upernet'}
# Converter names that fill only the `backbone` subtree of their factory model.
BACKBONE_ONLY = {**TORCHVISION, **FOCALNET_BACKBONES}


class ConvertWarning(UserWarning):
  """Keys of the input that the model does not use, or (strict=False) lacks."""


def reference_table(name: str, model_kwargs: Optional[dict] = None) -> Table:
  """The name mapping of factory model `name` (traced with `jax.eval_shape`).

  Raises:
    ConvertError: unknown model name or override.
  """
  items = tuple(sorted((model_kwargs or {}).items()))
  try:
    return _cached_table(name, items)
  except TypeError:                      # an unhashable override value
    return _table(name, dict(items))


@functools.lru_cache(maxsize=8)
def _cached_table(name: str, items: tuple) -> Table:
  return _table(name, dict(items))


def _table(name: str, model_kwargs: dict) -> Table:
  target = BACKBONE_ONLY.get(name, name)
  try:
    model = models.create(target, **model_kwargs)
  except ValueError as e:
    raise ConvertError(str(e)) from None
  rngs = {'params': jax.random.key(0), 'dropout': jax.random.key(1)}
  channels = getattr(model, 'in_channels', 3)    # the depth models take 1
  # train=True: the auxiliary head exists only in training.
  shapes = jax.eval_shape(
      lambda: model.init(rngs, jnp.zeros((1, 64, 64, channels)), train=True))
  flat = {(c,) + k: v for c in pretrained.COLLECTIONS
          for k, v in traverse_util.flatten_dict(dict(shapes.get(c, {}))).items()}
  if name in BACKBONE_ONLY:
    # Only the encoder; torchvision's (and a classifier's) names have no `backbone.`.
    flat = {k: v for k, v in flat.items() if k[1] == 'backbone'}
    return build_table(flat, drop_backbone_prefix=True)
  return build_table(flat, drop_backbone_prefix=isinstance(model, ImageClassifier))


def _listing(title: str, lines: list) -> str:
  return f'{len(lines)} {title}:\n  ' + '\n  '.join(lines)


def from_torch_state_dict(name: str, state_dict: Mapping[str, np.ndarray], *,
                          strict: bool = True, model_kwargs: Optional[dict] = None) -> dict:
  """Converts a reference state dict into the variables of `models.create(name)`.

  Args:
    name: a factory model name, e.g. 'fanet_tiny', 'fanet_tiny_classifier',
      'fanet_tiny_upernet'; or a key of `TORCHVISION_RESNETS` ('resnet50_torchvision'):
      a torchvision ImageNet ResNet into the `backbone` of the depth models, the RGB
      stem summed into the depth channel; or of `TORCHVISION_VGGS`
      ('vgg16_torchvision'): likewise a VGG-16, its fc6 / fc7 reshaped into convs;
      or of `FOCALNET_BACKBONES` ('focalnet_tiny_lrf_backbone'): a FocalNet
      ImageNet checkpoint into the `backbone` of its UperNet segmentor, focal
      kernels zero-padded, output norms at their init (listed in a warning).
    state_dict: reference name -> array (numpy or anything np.asarray takes).
    strict: missing keys are an error; when False they are warned about and left
      out of the result.
    model_kwargs: overrides for `models.create` (e.g. num_classes).

  Returns:
    {'params', 'batch_stats'}: nested dicts of numpy arrays with exactly the shapes
    and dtypes of the model's variables (`fanet_tiny`: the bare backbone tree;
    torchvision ResNets and VGGs, `FOCALNET_BACKBONES`: only the `backbone` subtree,
    for `pretrained.merge`).

  Raises:
    ConvertError: missing keys (strict) or shape mismatches, every one listed.
  """
  table = reference_table(name, model_kwargs)
  flat, missing, mismatched = {}, [], []
  at_init = []
  for e in table.entries:
    if e.name not in state_dict and name in FOCALNET_BACKBONES and (
        FOCALNET_OUT_NORM.fullmatch(e.name)):
      # Not in a classifier; the release's loader keeps their init (ones, zeros).
      init = np.ones if e.name.endswith('weight') else np.zeros
      flat[(e.collection,) + e.path] = init(e.shape, e.dtype)
      at_init.append(e.name)
      continue
    if e.name not in state_dict:
      missing.append(e.name)
      continue
    array = _from_torchvision(name, e, np.asarray(state_dict[e.name]))
    if array.shape != e.torch_shape:
      mismatched.append(f'{e.name}: model {e.torch_shape}, checkpoint {array.shape}')
      continue
    flat[(e.collection,) + e.path] = to_flax_layout(e, array)
  errors = ([_listing('shape mismatch(es)', mismatched)] if mismatched else [])
  if missing and strict:
    errors.insert(0, _listing('missing key(s)', missing))
  if errors:
    raise ConvertError(f'the state dict does not fit {name}: ' + '\n'.join(errors))
  unexpected = sorted(set(state_dict) - set(table.reference_names()))
  if unexpected:
    warnings.warn(f'{name} does not use ' + _listing('key(s) of the state dict',
                                                     unexpected), ConvertWarning)
  if missing:
    warnings.warn(f'{name}: ' + _listing('missing key(s) left out', missing),
                  ConvertWarning)
  if at_init:
    warnings.warn(f'{name}: ' + _listing('output norm key(s) at their init', at_init),
                  ConvertWarning)
  variables = traverse_util.unflatten_dict(flat)
  return {c: variables.get(c, {}) for c in pretrained.COLLECTIONS}


def _from_torchvision(name: str, entry, array: np.ndarray) -> np.ndarray:
  # The checkpoint-specific layouts: RGB stems for the depth models, VGG's Linears.
  if name in TORCHVISION_RESNETS and entry.name == TORCHVISION_STEM:
    return rgb_to_depth_stem(array, entry.torch_shape)
  if name in TORCHVISION_VGGS and entry.name == TORCHVISION_VGG_STEM:
    return rgb_to_depth_stem(array, entry.torch_shape)
  if name in TORCHVISION_VGGS and entry.name in TORCHVISION_VGG_FC:
    return vgg_fc_to_conv(array, entry.torch_shape)
  if name in FOCALNET_BACKBONES and '.focal_layers.' in entry.name:
    return pad_focal_kernel(array, entry.torch_shape)
  return array


def to_torch_state_dict(name: str, variables: dict,
                        model_kwargs: Optional[dict] = None) -> dict:
  """Converts our variables into a reference state dict.

  Args:
    name: the factory model name the variables belong to. For a bare backbone
      ('fanet_tiny') the `backbone` subtree of classifier / segmentor variables is
      taken.
    variables: {'params', 'batch_stats'} (numpy or jax arrays).
    model_kwargs: overrides for `models.create`.

  Returns:
    Reference name -> numpy array (OIHW kernels; BatchNorms with running_mean,
    running_var and num_batches_tracked = 0 as int64), in state-dict order.

  Raises:
    ConvertError: variables that are not those of the model, every difference listed.
  """
  table = reference_table(name, model_kwargs)
  params = variables.get('params') or {}
  if 'backbone' in params and not any(e.path[0] == 'backbone' for e in table.entries):
    variables = {c: (variables.get(c) or {}).get('backbone', {})
                 for c in pretrained.COLLECTIONS}
  flat = {(c,) + k: v for c in pretrained.COLLECTIONS
          for k, v in traverse_util.flatten_dict(dict(variables.get(c) or {})).items()}
  expected = {(e.collection,) + e.path: e for e in table.entries}
  problems = ['/'.join(k) + ': missing' for k in expected if k not in flat]
  problems += ['/'.join(k) + ': not in the model' for k in flat if k not in expected]
  problems += [f'{"/".join(k)}: model {e.shape}, variables {np.shape(flat[k])}'
               for k, e in expected.items() if k in flat and np.shape(flat[k]) != e.shape]
  if problems:
    raise ConvertError(f'the variables do not fit {name}: ' +
                       _listing('difference(s)', problems))
  state = {e.name: to_torch_layout(e, np.asarray(flat[(e.collection,) + e.path]))
           for e in table.entries}
  if name in TORCHVISION_VGGS:               # back to torchvision's Linear layout
    for fc in TORCHVISION_VGG_FC:
      state[fc] = conv_to_vgg_fc(state[fc])
  for prefix in table.bn_prefixes:
    state[f'{prefix}.{NUM_BATCHES_TRACKED}'] = np.zeros((), np.int64)
  return {n: state[n] for n in table.reference_names()}


def _parse(argv):
  parser = argparse.ArgumentParser(
      prog='python -m fanet_jax.pytorch.convert', description=__doc__.split('\n')[0])
  parser.add_argument('--model', required=True,
                      help='factory model name, e.g. fanet_tiny, fanet_tiny_classifier, '
                      'fanet_tiny_upernet; or resnet50_torchvision (alias resnet50): '
                      'torchvision ImageNet ResNet-50 -> the depth models\' backbone; '
                      'resnet50_torchvision_rgb / resnet101_torchvision_rgb -> the RGB '
                      'DeepLabv3+ backbones; '
                      'or vgg16_torchvision (alias vgg16): torchvision ImageNet '
                      'VGG-16 -> the FCN models\' backbone; or focalnet_tiny_lrf_backbone '
                      '(base, test): a FocalNet ImageNet checkpoint -> the backbone of '
                      'focalnet_tiny_lrf_upernet')
  parser.add_argument('--input', required=True,
                      help='--to flax: a .pth/.pth.tar/.pt, .safetensors or .npz state '
                      'dict; --to torch: a variables checkpoint or a run\'s workdir')
  parser.add_argument('--output', required=True,
                      help='--to flax: a new directory (Orbax checkpoint); --to torch: '
                      'a .pth, .safetensors or .npz file')
  parser.add_argument('--to', choices=('flax', 'torch'), default='flax')
  parser.add_argument('--num-classes', type=int, default=None,
                      help='classes of the head(s), when not the model default')
  parser.add_argument('--trust-pickle', action='store_true',
                      help='unpickle .pth files that hold more than tensors (runs code '
                      'from the file: only for files you trust)')
  return parser.parse_args(argv)


def _convert(args) -> str:
  kwargs = {} if args.num_classes is None else {'num_classes': args.num_classes}
  reference_table(args.model, kwargs)   # fail early on an unknown model
  if args.to == 'flax':
    if os.path.exists(args.output):
      raise ConvertError(f'{args.output}: already exists')
    state = load_state_dict_file(args.input, trust_pickle=args.trust_pickle)
    variables = from_torch_state_dict(args.model, state, model_kwargs=kwargs)
    pretrained.save_variables(args.output, variables)
    count = models.count_params(variables)
  else:
    check_writable(args.output)
    state = to_torch_state_dict(args.model, pretrained.load_variables(args.input), kwargs)
    save_state_dict_file(args.output, state)
    count = sum(np.size(v) for k, v in state.items() if k.endswith(('weight', 'bias')))
  return f'Wrote {count:,} parameters of {args.model} to {args.output}'


def main(argv=None) -> int:
  """The command line; returns the exit status (2 with a one-line error message)."""
  args = _parse(argv)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always', ConvertWarning)
    try:
      message = _convert(args)
    except (ConvertError, pretrained.PretrainedError) as e:
      print(f'error: {e}', file=sys.stderr)
      return 2
    finally:
      for w in caught:
        if issubclass(w.category, ConvertWarning):
          print(f'warning: {w.message}', file=sys.stderr)
        else:
          warnings.showwarning(w.message, w.category, w.filename, w.lineno)
  print(message)
  return 0


if __name__ == '__main__':
  sys.exit(main())
