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
  `layer{s}.{b}`, `downsample_{i}` -> `downsample.{i}`;
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
_TOP_ORDER = ('backbone', 'downsample_layers', 'stages', 'norm', 'head', 'decode_head',
              'auxiliary_head')


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
