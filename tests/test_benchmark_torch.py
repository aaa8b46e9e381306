"""The benchmark's PyTorch side: the reference's training step against
ours, and the reference's timer at a toy size. Needs torch (the test extra).
"""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fanet_jax import losses, models
from fanet_jax.pytorch import convert
from fanet_jax.models import fanet

if os.environ.get('CI'):
  import torch  # CI installs torch: a missing torch must fail there, not skip.
else:
  torch = pytest.importorskip(
      'torch', reason='needs the test extra: pip install -r requirements-test.txt')

from fanet_jax.speed import torch_baseline  # noqa: E402
from fanet_jax.pytorch import reference as ref  # noqa: E402  (needs torch)

TEST = dict(widths=fanet.TEST['widths'], depths=fanet.TEST['depths'])


def test_reference_training_forward_and_gradients_match_ours():
  torch.manual_seed(2)
  reference = ref.randomize_(ref.EncoderDecoder(**TEST, channels=16, drop_path_rate=0.0),
                             seed=3)
  reference.decode_head.dropout.p = reference.auxiliary_head.dropout.p = 0.0
  reference.train()
  state = {k: v.numpy() for k, v in reference.state_dict().items()}
  images = torch.randn(4, 3, 64, 96, generator=torch.Generator().manual_seed(4))
  labels = torch.randint(0, 5, (4, 64, 96), generator=torch.Generator().manual_seed(5))
  labels[:, :8] = 255
  logits, aux = reference(images)
  loss = ref.segmentation_loss(logits, aux, labels)
  loss.backward()

  # XLA convolutions: half the compile time of the fast formulations, whose gradients
  # equal theirs (tests/test_conv_formulation.py).
  model = models.create('fanet_test_upernet', drop_path_rate=0.0, dropout_rate=0.0,
                        conv_impl='lax')
  variables = convert.from_torch_state_dict('fanet_test_upernet', state)
  x = jnp.asarray(images.numpy().transpose(0, 2, 3, 1))
  y = jnp.asarray(labels.numpy(), jnp.int32)

  @jax.jit
  def ours(params, batch_stats, x, y):
    def objective(params):
      (logits, aux), _ = model.apply({'params': params, 'batch_stats': batch_stats}, x,
                                     train=True, mutable=['batch_stats'])
      return losses.segmentation_loss(logits, aux, y)[0], (logits, aux)
    return jax.value_and_grad(objective, has_aux=True)(params)

  (our_loss, (our_logits, our_aux)), grads = ours(variables['params'],
                                                  variables['batch_stats'], x, y)
  nchw = lambda a: np.asarray(a).transpose(0, 3, 1, 2)
  np.testing.assert_allclose(nchw(our_logits), logits.detach().numpy(), atol=1e-4)
  np.testing.assert_allclose(nchw(our_aux), aux.detach().numpy(), atol=1e-4)
  np.testing.assert_allclose(float(our_loss), loss.item(), rtol=1e-5)
  ours_torch_layout = convert.to_torch_state_dict(
      'fanet_test_upernet', {'params': jax.device_get(grads),
                             'batch_stats': variables['batch_stats']})
  theirs = {name: p.grad.numpy() for name, p in reference.named_parameters()}
  flat = lambda d: np.concatenate([np.ravel(d[k]) for k in sorted(theirs)])
  diff = np.linalg.norm(flat(ours_torch_layout) - flat(theirs)) / np.linalg.norm(flat(theirs))
  assert diff < 1e-4


def test_torch_timer_runs_the_reference_train_step():
  result = torch_baseline.run_case('fanet_tiny_upernet', 2, (64, 64), train=True, repeats=1)
  assert result['median_s'] > 0 and len(result['times_s']) == 1
  assert result['peak_rss_gb'] > 0 and result['threads'] >= 1
  with pytest.raises(ValueError, match='no PyTorch reference'):
    torch_baseline.run_case('deeplabv3plus_r50', 1, (64, 64), train=False, repeats=1)
