"""One run per workdir, and a resumed run refuses a changed model, data or recipe."""
import dataclasses
import json

import pytest

from fanet_jax import config as config_lib
from fanet_jax import workdir


def test_a_second_run_in_a_busy_workdir_stops_naming_the_holder(tmp_path):
  with workdir.lock(str(tmp_path)):
    with pytest.raises(workdir.WorkdirBusyError, match=r'in use by another run \(pid \d+\)'):
      with workdir.lock(str(tmp_path)):
        pass
  with workdir.lock(str(tmp_path)):  # released when the first run ended
    pass


@pytest.fixture
def saved():
  config = config_lib.load_experiment('demo')
  return config, json.loads(config_lib.to_json(config))


def test_length_reporting_and_data_location_may_change(saved):
  config, old = saved
  changed = dataclasses.replace(config, num_steps=config.num_steps * 2, eval_every=7,
                                log_every=3, data_dir='/elsewhere', worker_count=0)
  workdir.check_resume(old, changed, 'w')


def test_a_changed_model_or_recipe_is_refused_with_the_differences(saved):
  config, old = saved
  changed = dataclasses.replace(config, num_classes=3, learning_rate=1.0)
  with pytest.raises(config_lib.ConfigError) as error:
    workdir.check_resume(old, changed, 'runs/demo')
  message = str(error.value)
  assert message.startswith('config differs from the run in runs/demo: ')
  assert 'num_classes 5 -> 3' in message and 'learning_rate' in message
  assert 'allow_config_change' in message and '\n' not in message


def test_allowed_by_name_the_change_resumes(saved):
  config, old = saved
  changed = dataclasses.replace(config, learning_rate=1.0,
                                allow_config_change=('learning_rate',))
  workdir.check_resume(old, changed, 'w')
