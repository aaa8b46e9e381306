"""The tasks the trainer runs, and what differs between them.

A task turns the config into what the loop needs: the data sources, the training
loader, the evaluation batches, the objective, the evaluation and its table, and the
metric that picks the best checkpoint. `segmentation.py` serves ZeroWaste-f,
InterSegHands and their synthetic stand-ins (RGB or depth); `classification.py`
serves ImageNet pretraining. The trainer (fanet_jax/trainer.py) asks the task and
never branches on the task itself.
"""
from fanet_jax.config import Config, ConfigError
from fanet_jax.tasks.classification import Classification
from fanet_jax.tasks.segmentation import Segmentation

TASKS = ('segmentation', 'classification')


def create(config: Config) -> Segmentation | Classification:
  """The task of `config.task`."""
  if config.task == 'segmentation':
    return Segmentation(config)
  if config.task == 'classification':
    return Classification(config)
  raise ConfigError(f'task must be one of {TASKS}, got {config.task!r}')
