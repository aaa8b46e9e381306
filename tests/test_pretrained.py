"""init_from: shared subtrees are copied whole and checked, from a variables checkpoint
or from an earlier run's workdir; everything else keeps its fresh values."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fanet_jax import models, pretrained


def _random_variables(name, seed, **overrides):
  """Variables of the model's shapes filled with seeded random values (no compile)."""
  model = models.create(name, **overrides)
  shapes = jax.eval_shape(functools.partial(model.init, train=True),
                          {'params': jax.random.key(0), 'dropout': jax.random.key(0)},
                          jnp.zeros((1, 32, 32, 3)))
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: rng.normal(size=s.shape).astype(s.dtype),
                      {k: shapes[k] for k in pretrained.COLLECTIONS if k in shapes})


def test_backbone_moves_from_a_classifier_into_a_segmentor(tmp_path):
  source = _random_variables('fanet_test_classifier', 1)
  pretrained.save_variables(str(tmp_path / 'cls'), source)
  target = _random_variables('fanet_test_upernet', 2)
  merged, loaded = pretrained.merge(target, pretrained.load_variables(str(tmp_path / 'cls')))
  assert loaded == ['backbone']
  jax.tree.map(np.testing.assert_array_equal, merged['params']['backbone'],
               source['params']['backbone'])
  for head in ('decode_head', 'auxiliary_head'):
    jax.tree.map(np.testing.assert_array_equal, merged['params'][head],
                 target['params'][head])
    jax.tree.map(np.testing.assert_array_equal, merged['batch_stats'][head],
                 target['batch_stats'][head])


def test_a_bare_backbone_counts_as_the_backbone(tmp_path):
  source = _random_variables('fanet_test', 3)
  pretrained.save_variables(str(tmp_path / 'bb'), source)
  target = _random_variables('fanet_test_upernet', 4)
  merged, loaded = pretrained.merge(target, pretrained.load_variables(str(tmp_path / 'bb')))
  assert loaded == ['backbone']
  jax.tree.map(np.testing.assert_array_equal, merged['params']['backbone'],
               source['params'])


def test_shape_mismatch_lists_the_offending_leaves(tmp_path):
  source = _random_variables('fanet_test_upernet', 5, num_classes=3)
  pretrained.save_variables(str(tmp_path / 'seg3'), source)
  target = _random_variables('fanet_test_upernet', 6, num_classes=5)
  with pytest.raises(pretrained.PretrainedError, match=r"conv_seg.*kernel.*\(1, 1, 16, 5\)"):
    pretrained.merge(target, pretrained.load_variables(str(tmp_path / 'seg3')))


def test_missing_directory_is_a_clear_error(tmp_path):
  with pytest.raises(pretrained.PretrainedError, match='does not exist'):
    pretrained.load_variables(str(tmp_path / 'nothing'))
