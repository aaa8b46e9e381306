"""The benchmark's parts (issue #6): multiply-add counts, the PyTorch reference's
training step against ours, the reference and input-pipeline timers, the table.

Full-size programs are only traced; the timers run at toy sizes.
"""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fanet_jax import losses, models
from fanet_jax.pytorch import convert
from fanet_jax.speed import benchmark, data_loading, macs
from fanet_jax.models import fanet

if os.environ.get('CI'):
  import torch  # CI installs torch: a missing torch must fail there, not skip.
else:
  torch = pytest.importorskip('torch')

from fanet_jax.speed import torch_baseline  # noqa: E402
from fanet_jax.pytorch import reference as ref  # noqa: E402  (needs torch)

TEST = dict(widths=fanet.TEST['widths'], depths=fanet.TEST['depths'])


def test_macs_of_a_conv_and_a_matmul():
  x = jnp.zeros((2, 8, 6, 3))
  k = jnp.zeros((3, 3, 3, 5))
  conv = lambda x, k: jax.lax.conv_general_dilated(
      x, k, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  assert macs.count_macs(conv, x, k) == {'layers': 2 * 8 * 6 * 5 * 9 * 3,
                                         'interpolation': 0}
  # Backward: the input gradient and the kernel gradient cost one forward each.
  loss = lambda x, k: jnp.sum(conv(x, k))
  assert macs.count_macs(jax.grad(loss, argnums=(0, 1)), x, k)['layers'] == (
      3 * 2 * 8 * 6 * 5 * 9 * 3)
  assert macs.count_macs(jnp.matmul, jnp.zeros((4, 7)), jnp.zeros((7, 3)))['layers'] == 84


def test_classifier_macs_match_the_paper():
  # SPEC section 2 / FANet Table 4: 5.80 G multiply-adds at 224x224.
  case = benchmark.Case('fanet_tiny_classifier', 1, (224, 224))
  counted = benchmark.count_case_macs(case)
  assert counted['layers'] == 5_800_459_008
  assert counted['interpolation'] < 0.01 * counted['layers']


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

  model = models.create('fanet_test_upernet', drop_path_rate=0.0, dropout_rate=0.0)
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


def test_input_pipeline_timer():
  result = data_loading.run_case(batch=2, worker_count=0, num_batches=2, warmup_batches=1,
                                num_frames=1, frame_size=(216, 384))
  assert result['images'] == 4 and result['images_per_s'] > 0
  assert result['crop_size'] == [512, 512]


def test_table_has_the_reference_ratio_and_the_pipeline_line():
  row = {'case': 'fanet_upernet_train', 'batch': 2, 'size': [512, 512], 'compile_s': 40.0,
         'median_s': 5.0, 'images_per_s': 0.4, 'gmacs': 518.1, 'gflops_per_s': 207.2,
         'peak_rss_gb': 4.0, 'paper_ms': None, 'paper_hardware': '',
         'torch': {'median_s': 8.0, 'peak_rss_gb': 4.7}, 'speedup': 1.6,
         'torch_malloc': {'median_s': 6.5, 'peak_rss_gb': 4.8}, 'speedup_malloc': 1.3}
  pipe = {'case': 'input_pipeline', 'frame_size': [1080, 1920], 'crop_size': [512, 512],
          'worker_count': 2, 'images_per_s': 20.0}
  table = benchmark._format([row, pipe])
  assert '8000.0' in table and '1.60' in table
  assert '6500.0     1.30' in table  # the reference with our malloc settings
  assert '20.00 img/s = 50.0x the train step\'s 0.40 img/s' in table
