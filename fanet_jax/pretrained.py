"""Initialising a model from pretrained variables (`Config.init_from`).

Two kinds of source directory hold variables:
- a *variables checkpoint*: an Orbax checkpoint of `{'params', 'batch_stats'}` for one
  model of the factory, as `python -m fanet_jax.pytorch.convert` writes (`save_variables`);
- a *workdir* of an earlier run: the best checkpoint's train state (or, without one,
  the newest rolling checkpoint's).

Transfer is by top-level subtree: every subtree the model and the source share
(`backbone`, `decode_head`, `auxiliary_head`, ...) is copied whole, after checking
that its structure and shapes agree; the rest keeps its fresh initialisation. A bare
backbone (the variables of `create('fanet_tiny')`) counts as the `backbone` subtree,
so an ImageNet classifier, a converted backbone and a segmentor all hand over the
same backbone.
"""
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from fanet_jax import checkpoints

COLLECTIONS = ('params', 'batch_stats')


class PretrainedError(ValueError):
  """A pretrained source that is missing or does not fit the model."""


def save_variables(directory: str, variables: dict) -> None:
  """Writes `{'params', 'batch_stats'}` (numpy or jax arrays) as an Orbax checkpoint.

  Args:
    directory: target directory; must not exist yet.
    variables: the model's variables.
  """
  tree = {k: variables[k] for k in COLLECTIONS if k in variables}
  with ocp.StandardCheckpointer() as writer:
    writer.save(os.path.abspath(directory), tree)


def _restore_as_stored(path: str) -> dict:
  """Restores a StandardCheckpointer item into host arrays of its stored shapes."""
  with ocp.StandardCheckpointer() as reader:
    metadata = reader.metadata(path).item_metadata
    target = jax.tree.map(lambda m: np.empty(m.shape, m.dtype), dict(metadata))
    return reader.restore(path, target)


def _state_path(workdir: str) -> str:
  try:
    return checkpoints.state_path(workdir, 'best')[1]
  except checkpoints.CheckpointError as e:
    raise PretrainedError(str(e)) from None


def load_variables(path: str) -> dict:
  """Reads `{'params', 'batch_stats'}` from a variables checkpoint or a run's workdir.

  Raises:
    PretrainedError: `path` does not exist or holds no variables.
  """
  path = os.path.abspath(path)
  if not os.path.isdir(path):
    raise PretrainedError(f'{path}: pretrained directory does not exist')
  is_workdir = os.path.isdir(os.path.join(path, 'checkpoints')) or os.path.isdir(
      os.path.join(path, 'best'))
  tree = _restore_as_stored(_state_path(path) if is_workdir else path)
  if 'params' not in tree:
    raise PretrainedError(f'{path}: the checkpoint holds no params')
  return {k: tree.get(k) or {} for k in COLLECTIONS}


def _as_model_tree(tree: dict) -> dict:
  # A bare backbone (variables of `create('fanet_tiny')`) is a segmentor's backbone.
  return {'backbone': tree} if 'downsample_layers_0' in tree else tree


def _shapes(tree: Any) -> dict:
  """{path string: shape} of a tree's leaves."""
  return {jax.tree_util.keystr(path): tuple(np.shape(leaf))
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _check_same_shapes(name: str, target: Any, source: Any) -> None:
  ours, theirs = _shapes(target), _shapes(source)
  problems = [f'{path}: model {ours.get(path, "missing")}, pretrained '
              f'{theirs.get(path, "missing")}' for path in sorted(set(ours) | set(theirs))
              if ours.get(path) != theirs.get(path)]
  if problems:
    raise PretrainedError(f'pretrained {name} does not fit the model:\n  ' +
                          '\n  '.join(problems[:20]))


def merge(variables: dict, pretrained: dict) -> tuple[dict, list[str]]:
  """Copies the shared top-level subtrees of `pretrained` into `variables`.

  Args:
    variables: the model's freshly initialised `{'params', 'batch_stats'}`.
    pretrained: `load_variables`'s result.

  Returns:
    (new variables, names of the subtrees copied).

  Raises:
    PretrainedError: no shared subtree, or a shared one whose shapes differ.
  """
  params = _as_model_tree(pretrained['params'])
  shared = [k for k in variables['params'] if k in params]
  if not shared:
    raise PretrainedError(
        f'the pretrained params ({sorted(params)}) share no part with the model '
        f'({sorted(variables["params"])})')
  merged = {}
  for collection in COLLECTIONS:
    ours = dict(variables.get(collection) or {})
    theirs = _as_model_tree(pretrained.get(collection) or {})
    for name in shared:
      if name in ours:
        _check_same_shapes(f'{collection}/{name}', ours[name], theirs.get(name, {}))
        ours[name] = jax.tree.map(lambda t, s: np.asarray(s, t.dtype), ours[name],
                                  theirs[name])
    merged[collection] = ours
  return merged, shared
