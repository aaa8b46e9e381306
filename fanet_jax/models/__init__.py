"""Model factory: the one name table of fanet-jax models (docs/models.md section 7).

`create('fanet_tiny_upernet', num_classes=5)` builds the paper's segmentor. Overrides
are routed by field name: each key goes to every component (backbone, decode head,
auxiliary head, classifier / segmentor) with a dataclass field of that name, so
`num_classes` reaches both heads and `dtype` every component; a key no component
has raises ValueError. Segmentors also take `use_auxiliary_head`.

FocalNet (docs/models.md section 9) follows the same routing, but its ImageNet
classifiers carry the release's names, `focalnet_tiny_lrf` / `focalnet_base_lrf`
(no `_classifier` suffix; `focalnet_test` is the bare test backbone and
`focalnet_test_classifier` its classifier); `focalnet_*_upernet` change the backbone
as the release's segmentation configs do (`focalnet.SEGMENTATION`).

The depth segmentors of docs/models.md sections 3-4 (`deeplabv3plus_*`, whose `*_rgb`
variants take RGB for ZeroWaste-f, and `dense_attention_seg_*`) and the FCN baselines
of section 8 (`fcn*s_vgg16`) are single modules with flat fields, so every override
(`attention='none'`, `num_classes`, `stage_sizes`, ...) goes to that one module; so
are the GCN and RefineNet baselines of section 10 (`gcn_*`, `refinenet_*`).
"""
import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from fanet_jax.models import deeplab, dense_attention, fanet, fcn, gcn, refinenet
from fanet_jax.models import focalnet
from fanet_jax.models.classifier import ImageClassifier
from fanet_jax.models.segmentor import EncoderDecoder
from fanet_jax.models.upernet import FCNHead, UPerHead

# Fields that hold submodules or Flax bookkeeping, never overridable values.
_NOT_OVERRIDABLE = {'parent', 'name', 'backbone', 'decode_head', 'auxiliary_head'}


def _fields(cls: type) -> set:
  return {f.name for f in dataclasses.fields(cls)} - _NOT_OVERRIDABLE


def _route(overrides: dict, components: dict, builder_keys: tuple = ()) -> dict:
  """Splits `overrides` by component.

  Args:
    overrides: field name -> value.
    components: role -> module class.
    builder_keys: keys the builder itself takes (only listed in the error).

  Returns:
    role -> {field: value} for the fields that class has.

  Raises:
    ValueError: a key that no component has.
  """
  valid = set().union(*(_fields(cls) for cls in components.values()))
  unknown = sorted(set(overrides) - valid)
  if unknown:
    raise ValueError(f'unknown model override(s) {unknown}; valid keys: '
                     f'{sorted(valid | set(builder_keys))}')
  return {role: {k: v for k, v in overrides.items() if k in _fields(cls)}
          for role, cls in components.items()}


def _backbone(variant: dict, **overrides) -> nn.Module:
  kw = _route(overrides, {'backbone': fanet.FANet})['backbone']
  return fanet.FANet(**{**variant, **kw})


def _classifier(variant: dict, **overrides) -> nn.Module:
  kw = _route(overrides, {'backbone': fanet.FANet, 'classifier': ImageClassifier})
  return ImageClassifier(fanet.FANet(**{**variant, **kw['backbone']}), **kw['classifier'])


def _upernet(variant: dict, head_channels: int, use_auxiliary_head: bool = True,
             **overrides) -> nn.Module:
  kw = _route(overrides, {'backbone': fanet.FANet, 'decode_head': UPerHead,
                          'auxiliary_head': FCNHead, 'segmentor': EncoderDecoder},
              builder_keys=('use_auxiliary_head',))
  head = lambda cls, role: cls(**{'channels': head_channels, **kw[role]})
  aux = head(FCNHead, 'auxiliary_head') if use_auxiliary_head else None
  return EncoderDecoder(fanet.FANet(**{**variant, **kw['backbone']}),
                        head(UPerHead, 'decode_head'), aux, **kw['segmentor'])


def _single(cls: type, variant: dict, **overrides) -> nn.Module:
  kw = _route(overrides, {'segmentor': cls})['segmentor']
  return cls(**{**variant, **kw})


def _focalnet_classifier(variant: dict, **overrides) -> nn.Module:
  kw = _route(overrides, {'backbone': focalnet.FocalNet,
                          'classifier': focalnet.FocalNetClassifier})
  return focalnet.FocalNetClassifier(focalnet.FocalNet(**{**variant, **kw['backbone']}),
                                     **kw['classifier'])


def _focalnet_upernet(variant: dict, segmentation: dict, channels: int,
                      aux_channels: int, use_auxiliary_head: bool = True,
                      **overrides) -> nn.Module:
  # `segmentation`: the backbone fields the release's UperNet configs change.
  kw = _route(overrides, {'backbone': focalnet.FocalNet, 'decode_head': UPerHead,
                          'auxiliary_head': FCNHead, 'segmentor': EncoderDecoder},
              builder_keys=('use_auxiliary_head',))
  backbone = focalnet.FocalNet(**{**variant, **segmentation, **kw['backbone']})
  aux = (FCNHead(**{'channels': aux_channels, **kw['auxiliary_head']})
         if use_auxiliary_head else None)
  return EncoderDecoder(backbone, UPerHead(**{'channels': channels, **kw['decode_head']}),
                        aux, **kw['segmentor'])


# The name table. Head channels: 256 as in the paper; 64 / 16 for the CPU variants.
_MODELS = {
    'fanet_tiny': functools.partial(_backbone, fanet.TINY),
    'fanet_tiny_classifier': functools.partial(_classifier, fanet.TINY),
    'fanet_tiny_upernet': functools.partial(_upernet, fanet.TINY, 256),
    'fanet_micro': functools.partial(_backbone, fanet.MICRO),
    'fanet_micro_classifier': functools.partial(_classifier, fanet.MICRO),
    'fanet_micro_upernet': functools.partial(_upernet, fanet.MICRO, 64),
    'fanet_test': functools.partial(_backbone, fanet.TEST),
    'fanet_test_classifier': functools.partial(_classifier, fanet.TEST),
    'fanet_test_upernet': functools.partial(_upernet, fanet.TEST, 16),
    # FocalNet (docs/models.md section 9): `*_lrf` are the ImageNet classifiers; the
    # segmentors take the release's UperNet config (heads 512 / auxiliary 256).
    'focalnet_tiny_lrf': functools.partial(_focalnet_classifier, focalnet.TINY_LRF),
    'focalnet_tiny_lrf_upernet': functools.partial(
        _focalnet_upernet, focalnet.TINY_LRF, focalnet.SEGMENTATION, 512, 256),
    'focalnet_base_lrf': functools.partial(_focalnet_classifier, focalnet.BASE_LRF),
    'focalnet_base_lrf_upernet': functools.partial(
        _focalnet_upernet, focalnet.BASE_LRF, focalnet.SEGMENTATION, 512, 256),
    'focalnet_test': functools.partial(_single, focalnet.FocalNet, focalnet.TEST),
    'focalnet_test_classifier': functools.partial(_focalnet_classifier, focalnet.TEST),
    'focalnet_test_upernet': functools.partial(
        _focalnet_upernet, focalnet.TEST,
        dict(focalnet.SEGMENTATION, focal_windows=(5, 5, 5, 5)), 16, 8),
    # Depth input, 3 classes (docs/models.md section 3); micro / test: narrow CPU variants.
    'deeplabv3plus_r50': functools.partial(_single, deeplab.DeepLabV3Plus, deeplab.R50),
    'deeplabv3plus_micro': functools.partial(_single, deeplab.DeepLabV3Plus,
                                             deeplab.MICRO),
    'deeplabv3plus_test': functools.partial(_single, deeplab.DeepLabV3Plus,
                                            deeplab.TEST),
    # RGB, output stride 8: the ZeroWaste-f baselines (FANet Table 1).
    'deeplabv3plus_r50_rgb': functools.partial(_single, deeplab.DeepLabV3Plus,
                                               deeplab.R50_RGB),
    'deeplabv3plus_r101_rgb': functools.partial(_single, deeplab.DeepLabV3Plus,
                                                deeplab.R101_RGB),
    'deeplabv3plus_test_rgb': functools.partial(_single, deeplab.DeepLabV3Plus,
                                                deeplab.TEST_RGB),
    'dense_attention_seg_r50': functools.partial(
        _single, dense_attention.DenseAttentionSeg, dense_attention.R50),
    'dense_attention_seg_micro': functools.partial(
        _single, dense_attention.DenseAttentionSeg, dense_attention.MICRO),
    'dense_attention_seg_test': functools.partial(
        _single, dense_attention.DenseAttentionSeg, dense_attention.TEST),
    # FCN on VGG-16, depth input (docs/models.md section 8); test: widths 4-16.
    'fcn32s_vgg16': functools.partial(_single, fcn.FCN,
                                      dict(fcn.VGG16_FULL, prediction_stride=32)),
    'fcn16s_vgg16': functools.partial(_single, fcn.FCN,
                                      dict(fcn.VGG16_FULL, prediction_stride=16)),
    'fcn8s_vgg16': functools.partial(_single, fcn.FCN,
                                     dict(fcn.VGG16_FULL, prediction_stride=8)),
    'fcn8s_test': functools.partial(_single, fcn.FCN,
                                    dict(fcn.TEST, prediction_stride=8)),
    # GCN (k = 9) and RefineNet on ResNet-50, depth input (docs/models.md section 10).
    'gcn_r50': functools.partial(_single, gcn.GlobalConvNet, gcn.R50),
    'gcn_test': functools.partial(_single, gcn.GlobalConvNet, gcn.TEST),
    'refinenet_r50': functools.partial(_single, refinenet.RefineNet, refinenet.R50),
    'refinenet_test': functools.partial(_single, refinenet.RefineNet, refinenet.TEST),
}


def available() -> list[str]:
  """Returns: the model names `create` accepts, sorted."""
  return sorted(_MODELS)


def create(name: str, **overrides) -> nn.Module:
  """Builds a model by name.

  Args:
    name: one of `available()`.
    **overrides: field values routed by name to the components that have them
      (e.g. `num_classes`, `use_scm`, `drop_path_rate`, `dtype`, `conv_impl`);
      segmentors also accept `use_auxiliary_head` (default True).

  Returns:
    An unbound flax Module.

  Raises:
    ValueError: unknown name or override key.
  """
  if name not in _MODELS:
    raise ValueError(f'unknown model {name!r}; available: {available()}')
  return _MODELS[name](**overrides)


def count_params(variables_or_params: Any) -> int:
  """Number of parameters (array or ShapeDtypeStruct leaves of `params`).

  Args:
    variables_or_params: a variables dict with a 'params' collection, or a params
      tree itself.

  Returns:
    The total element count of the params leaves.
  """
  tree = variables_or_params
  if isinstance(tree, dict) or hasattr(tree, 'keys'):
    if 'params' in tree:
      tree = tree['params']
  return int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(tree)))
