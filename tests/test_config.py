"""Config loading and overrides: typos fail loudly, values are typed."""
import pytest

from fanet_jax import config as config_lib


def test_every_experiment_loads():
  names = config_lib.list_experiments()
  for required in ('demo', 'zerowaste_fanet_tiny', 'ablation_baseline', 'ablation_scm',
                   'ablation_frm_high', 'ablation_frm_low', 'ablation_frm',
                   'ablation_full'):
    assert required in names
  for name in names:
    assert isinstance(config_lib.load_experiment(name), config_lib.Config)


def test_ablation_rows_switch_the_afe_branches():
  base = config_lib.load_experiment('ablation_baseline').model_kwargs
  assert base == {'use_scm': False, 'use_frm_high': False, 'use_frm_low': False}
  full = config_lib.load_experiment('ablation_full')
  assert full == config_lib.load_experiment('zerowaste_fanet_tiny')


def test_unknown_experiment_lists_the_available_ones():
  with pytest.raises(config_lib.ConfigError, match="unknown experiment 'nope'.*demo"):
    config_lib.load_experiment('nope')


def test_overrides_are_parsed_by_field_type():
  config = config_lib.apply_overrides(config_lib.Config(), [
      'num_steps=10', 'crop_size=(64, 32)', 'photometric=false', 'learning_rate=1',
      'manual_dir=/data/zw', 'model_kwargs={"use_scm": False}', 'dataset_config=none'])
  assert config.num_steps == 10
  assert config.crop_size == (64, 32)
  assert config.photometric is False
  assert config.learning_rate == 1.0 and isinstance(config.learning_rate, float)
  assert config.manual_dir == '/data/zw'
  assert config.model_kwargs == {'use_scm': False}
  assert config.dataset_config is None


def test_unknown_key_fails_with_the_valid_keys():
  with pytest.raises(config_lib.ConfigError, match="unknown config key 'num_step'.*num_steps"):
    config_lib.apply_overrides(config_lib.Config(), ['num_step=3'])


@pytest.mark.parametrize('item', ['num_steps=ten', 'crop_size=5', 'photometric=maybe',
                                  'num_steps'])
def test_bad_values_fail(item):
  with pytest.raises(config_lib.ConfigError):
    config_lib.apply_overrides(config_lib.Config(), [item])
