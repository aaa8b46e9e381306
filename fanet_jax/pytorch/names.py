"""Reference (PyTorch) state-dict names and layouts <-> Flax variable paths (docs/models.md sections 1-2).

The mapping is derived from the structure, not listed: every leaf of a factory model's
variables (`jax.eval_shape` of its init, so nothing is computed) gets its reference
name from a few rules, and the resulting table is checked to be one-to-one.

- path segments: `downsample_layers_{i}` -> `downsample_layers.{i}`, `stages_{s}_{b}`
  -> `stages.{s}.{b}`, `lateral_convs_{i}` / `fpn_convs_{i}` / `convs_{i}` -> `.{i}`,
  `psp_modules_{i}` -> `psp_modules.{i}.1` (mmseg's PPM branch is
  `Sequential(AdaptiveAvgPool2d, ConvModule)`); the reference keeps SCM's layers in
  the AFE itself: `attn/scm/ctx_conv` -> `attn.ctx_conv`, `attn/scm/norm` -> `attn.norm3`;
  torchvision ResNets (the depth models' encoder, `models/resnet.py`): `layer{s}_{b}` ->
  `layer{s}.{b}`, `downsample_{i}` -> `downsample.{i}`; torchvision's VGG-16 (FCN's
  encoder, `models/fcn.py`): `features_{i}` -> `features.{i}`, and the
  convolutionalised `fc6` / `fc7` -> `classifier.0` / `classifier.3`; FocalNet
  (`models/focalnet.py`): `layers_{i}_blocks_{j}` -> `layers.{i}.blocks.{j}`,
  `layers_{i}_downsample` -> `layers.{i}.downsample`, `focal_layers_{k}` ->
  `focal_layers.{k}.0`;
- leaves: `kernel` / `scale` -> `weight`, `bias` -> `bias`; BatchNorm statistics
  (collection `batch_stats`) `mean` / `var` -> `running_mean` / `running_var`; every
  BatchNorm also has a `num_batches_tracked` buffer, which Flax does not keep;
- prefixes: the classifier reference (ImageNet) has its backbone at the top level
  (`downsample_layers`, `stages`, `norm`, `head`), so the Flax `backbone/` prefix is
  dropped; mmseg segmentors keep `backbone.`, `decode_head.`, `auxiliary_head.`. A
  torchvision ResNet checkpoint is a bare classifier too (`conv1`, `layer1`, `fc`).

Depth stem: torchvision's ImageNet `conv1.weight` is (64, 3, 7, 7) and the depth
encoder's is (64, 1, 7, 7); `rgb_to_depth_stem` sums the filters over the RGB channels.
A depth map seen as a grey image (three equal channels d) then gives exactly the
ImageNet first-layer response, sum_c W_c * d = (sum_c W_c) * d (the usual
ImageNet-to-single-channel transfer; torchvision's input normalisation is not applied).

VGG fc6 / fc7: torchvision's `classifier.0.weight` is a Linear (4096, 512 * 7 * 7) on
pool5 flattened in (C, H, W) order, so its rows reshaped to (4096, 512, 7, 7) are an
OIHW conv kernel whose 7x7 conv over a 7x7 map equals the Linear layer (FCN's
"convolutionalisation"); `classifier.3.weight` (4096, 4096) becomes a 1x1 conv.
`vgg_fc_to_conv` and `conv_to_vgg_fc` do these reshapes.

Layouts: conv kernels are OIHW there (grouped: O, I/groups, H, W) and HWIO here (H, W,
I/groups, O); Linear weights are (out, in) there and Dense kernels (in, out) here.
"""
import dataclasses
import re

import numpy as np

# Whole path segments, each matched in full: (pattern, replacement).
_SEGMENT_RULES = tuple((re.compile(p), r) for p, r in (
    (r'stages_(\d+)_(\d+)', r'stages.\1.\2'),
    (r'psp_modules_(\d+)', r'psp_modules.\1.1'),
    (r'(downsample_layers|lateral_convs|fpn_convs|convs)_(\d+)', r'\1.\2'),
    (r'(layer\d+)_(\d+)', r'\1.\2'),               # torchvision ResNet blocks
    (r'downsample_(\d+)', r'downsample.\1'),        # torchvision's shortcut Sequential
    (r'features_(\d+)', r'features.\1'),            # torchvision VGG's conv Sequential
    (r'fc6', r'classifier.0'),                       # torchvision VGG's Linear layers,
    (r'fc7', r'classifier.3'),                       # as convs in FCN (`vgg_fc_to_conv`)
    (r'layers_(\d+)_blocks_(\d+)', r'layers.\1.blocks.\2'),    # FocalNet's stages,
    (r'layers_(\d+)_downsample', r'layers.\1.downsample'),
    (r'focal_layers_(\d+)', r'focal_layers.\1.0'),   # its Sequential(conv, GELU)
))
# SCM's layers sit in the AFE itself in the reference.
_SCM_NAMES = {'ctx_conv': 'ctx_conv', 'norm': 'norm3'}
_LEAF_NAMES = {('params', 'kernel'): 'weight', ('params', 'scale'): 'weight',
               ('params', 'bias'): 'bias', ('batch_stats', 'mean'): 'running_mean',
               ('batch_stats', 'var'): 'running_var'}
# Order of a module's entries in a PyTorch state dict: parameters, then buffers.
_LEAF_ORDER = ('weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked')
NUM_BATCHES_TRACKED = 'num_batches_tracked'


@dataclasses.dataclass(frozen=True)
class Entry:
  """One Flax leaf and its reference counterpart.

  Attributes:
    collection: 'params' or 'batch_stats'.
    path: the leaf's path inside the collection.
    name: the reference state-dict name.
    shape: the Flax shape.
    dtype: the Flax dtype.
  """
  collection: str
  path: tuple
  name: str
  shape: tuple
  dtype: np.dtype

  @property
  def torch_shape(self) -> tuple:
    """The shape of the reference tensor (OIHW / (out, in) for kernels)."""
    return tuple(np.empty(self.shape, np.bool_).transpose(_to_torch_axes(self)).shape)


def _to_torch_axes(entry: Entry) -> tuple:
  if entry.path[-1] == 'kernel' and len(entry.shape) == 4:
    return (3, 2, 0, 1)                 # HWIO -> OIHW
  if entry.path[-1] == 'kernel' and len(entry.shape) == 2:
    return (1, 0)                       # (in, out) -> (out, in)
  return tuple(range(len(entry.shape)))


def to_torch_layout(entry: Entry, array: np.ndarray) -> np.ndarray:
  """A Flax array in the reference layout (contiguous)."""
  return np.ascontiguousarray(np.transpose(array, _to_torch_axes(entry)))


def to_flax_layout(entry: Entry, array: np.ndarray) -> np.ndarray:
  """A reference array in the Flax layout and dtype (contiguous)."""
  axes = np.argsort(_to_torch_axes(entry))
  return np.ascontiguousarray(np.transpose(array, axes), dtype=entry.dtype)


def reference_name(collection: str, path: tuple, drop_backbone_prefix: bool) -> str:
  """The reference state-dict name of the Flax leaf `collection/path`.

  Args:
    collection: 'params' or 'batch_stats'.
    path: the leaf's path inside the collection (strings).
    drop_backbone_prefix: True for the classifier, whose reference has no `backbone.`.

  Returns:
    A dotted name such as `stages.0.1.attn.norm3.weight`.

  Raises:
    KeyError: a leaf no rule knows.
  """
  *modules, leaf = path
  if drop_backbone_prefix and modules[:1] == ['backbone']:
    modules = modules[1:]
  names = []
  for segment in modules:
    if names[-1:] == ['scm']:
      names[-1] = _SCM_NAMES[segment]
      continue
    for pattern, replacement in _SEGMENT_RULES:
      if pattern.fullmatch(segment):
        segment = pattern.sub(replacement, segment)
        break
    names.append(segment)
  return '.'.join(names + [_LEAF_NAMES[(collection, leaf)]])


@dataclasses.dataclass(frozen=True)
class Table:
  """The name mapping of one model.

  Attributes:
    entries: one per Flax leaf, in reference state-dict order.
    bn_prefixes: module names of the BatchNorms (owners of `num_batches_tracked`).
  """
  entries: tuple
  bn_prefixes: tuple

  def reference_names(self) -> list:
    """Every name of the reference state dict, `num_batches_tracked` included."""
    return _in_reference_order([e.name for e in self.entries] +
                               [f'{p}.{NUM_BATCHES_TRACKED}' for p in self.bn_prefixes])


# Top-level modules in the order the reference defines them; the rest keeps the Flax
# tree's order.
_TOP_ORDER = ('backbone', 'downsample_layers', 'stages', 'patch_embed', 'layers', 'norm',
              'head', 'decode_head', 'auxiliary_head')


def _in_reference_order(names: list) -> list:
  # Each module's parameters before its buffers, as in PyTorch (load_state_dict does
  # not care; people reading the file do).
  ranks = {}
  for name in names:
    ranks.setdefault(name.rsplit('.', 1)[0], len(ranks))

  def key(name):
    module, leaf = name.rsplit('.', 1)
    top = module.split('.', 1)[0]
    return (_TOP_ORDER.index(top) if top in _TOP_ORDER else len(_TOP_ORDER),
            ranks[module], _LEAF_ORDER.index(leaf))
  return sorted(names, key=key)


def build_table(flat_variables: dict, drop_backbone_prefix: bool) -> Table:
  """Builds the mapping from a model's flattened variable shapes.

  Args:
    flat_variables: {(collection, *path): ShapeDtypeStruct or array}, params first.
    drop_backbone_prefix: see `reference_name`.

  Returns:
    The Table, entries in reference order.

  Raises:
    ValueError: two leaves with one reference name (a rule set that is not 1:1).
  """
  entries = {}
  for key, leaf in flat_variables.items():
    entry = Entry(key[0], tuple(key[1:]),
                  reference_name(key[0], tuple(key[1:]), drop_backbone_prefix),
                  tuple(leaf.shape), np.dtype(leaf.dtype))
    if entry.name in entries:
      raise ValueError(f'{entries[entry.name].path} and {entry.path} both map to '
                       f'{entry.name}')
    entries[entry.name] = entry
  bn_prefixes = tuple(e.name[:-len('.running_mean')] for e in entries.values()
                      if e.collection == 'batch_stats' and e.path[-1] == 'mean')
  return Table(tuple(entries[n] for n in _in_reference_order(list(entries))),
               bn_prefixes)


# The stem conv of a torchvision ResNet state dict.
TORCHVISION_STEM = 'conv1.weight'


def rgb_to_depth_stem(array: np.ndarray, torch_shape: tuple) -> np.ndarray:
  """An RGB stem kernel (O, 3, H, W) for a 1-channel model: summed over the channels.

  Args:
    array: the checkpoint's stem kernel (OIHW).
    torch_shape: the model's stem kernel shape (OIHW).

  Returns:
    `array` summed over its input channels (keepdims) when it is (O, 3, H, W) and the
    model wants (O, 1, H, W); otherwise `array` unchanged (a mismatch is reported by
    the caller). See the module docstring for why the sum.
  """
  array, torch_shape = np.asarray(array), tuple(torch_shape)
  if (array.ndim == 4 and array.shape[1] == 3 and len(torch_shape) == 4
      and torch_shape[1] == 1
      and array.shape[:1] + array.shape[2:] == torch_shape[:1] + torch_shape[2:]):
    # Sum in float64: the float32 result is then the correctly rounded sum.
    return array.astype(np.float64).sum(axis=1, keepdims=True).astype(array.dtype)
  return array


# The stem conv of a torchvision VGG state dict, and its Linear layers that FCN turns
# into convs.
TORCHVISION_VGG_STEM = 'features.0.weight'
TORCHVISION_VGG_FC = ('classifier.0.weight', 'classifier.3.weight')


def vgg_fc_to_conv(array: np.ndarray, torch_shape: tuple) -> np.ndarray:
  """A torchvision Linear weight (O, C * H * W) as the OIHW kernel (O, C, H, W).

  torchvision flattens pool5 (N, C, H, W) row-major, so input feature
  c * H * W + h * W + w is pixel (h, w) of channel c: a plain reshape of each row.

  Args:
    array: the checkpoint's Linear weight (2-D).
    torch_shape: the model's conv kernel shape (OIHW).

  Returns:
    `array` reshaped to `torch_shape` when it is 2-D with that many elements per
    output; otherwise `array` unchanged (a mismatch is reported by the caller).
  """
  array, torch_shape = np.asarray(array), tuple(torch_shape)
  if (array.ndim == 2 and len(torch_shape) == 4 and array.shape[0] == torch_shape[0]
      and array.shape[1] == int(np.prod(torch_shape[1:]))):
    return array.reshape(torch_shape)
  return array


def conv_to_vgg_fc(array: np.ndarray) -> np.ndarray:
  """The inverse of `vgg_fc_to_conv`: an OIHW kernel as a Linear weight (O, I * H * W)."""
  array = np.asarray(array)
  return np.ascontiguousarray(array.reshape(array.shape[0], -1))


# FocalNet: a release ImageNet checkpoint read into the segmentation backbone
# (convert.py's FOCALNET_BACKBONES), as the release's segmentation/mmcv_custom/
# checkpoint.py loads one: its per-stage output norms are not in the classifier.
FOCALNET_OUT_NORM = re.compile(r'norm\d+\.(weight|bias)')


def pad_focal_kernel(array: np.ndarray, torch_shape: tuple) -> np.ndarray:
  """A depthwise focal kernel (C, 1, k, k) zero-padded on every side to (C, 1, K, K).

  Convolved with padding K // 2 instead of k // 2, the padded kernel gives exactly the
  small one's output: the added taps are zero and the centre stays on the same pixel.
  The release's segmentation backbone (focal window 9: kernels 9, 11, 13) starts so
  from its classifiers (window 3: kernels 3, 5, 7).

  Args:
    array: the checkpoint's kernel (OIHW).
    torch_shape: the model's kernel shape (OIHW).

  Returns:
    `array` padded to `torch_shape` when it is a smaller square kernel of the same
    channels with an even size difference; otherwise `array` unchanged (a mismatch is
    reported by the caller).
  """
  array, torch_shape = np.asarray(array), tuple(torch_shape)
  if (array.ndim != 4 or len(torch_shape) != 4 or array.shape[:2] != torch_shape[:2]
      or array.shape[2] != array.shape[3] or torch_shape[2] != torch_shape[3]):
    return array
  d = torch_shape[2] - array.shape[2]
  if d <= 0 or d % 2:
    return array
  return np.pad(array, ((0, 0), (0, 0), (d // 2, d // 2), (d // 2, d // 2)))
