"""The benchmark's torch-free parts: multiply-add counts, the input-pipeline
timer, the table.

Full-size programs are only traced; the timer runs at toy sizes. The PyTorch
reference's parts are in tests/test_benchmark_torch.py (they need the test extra).
"""
import jax
import jax.numpy as jnp

from fanet_jax.speed import benchmark, cases, data_loading, macs


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
  # docs/models.md section 6 / FANet Table 4: 5.80 G multiply-adds at 224x224.
  case = cases.Case('fanet_tiny_classifier', 1, (224, 224))
  counted = cases.count_case_macs(case)
  assert counted['layers'] == 5_800_459_008
  assert counted['interpolation'] < 0.01 * counted['layers']


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
         'torch_malloc': {'median_s': 6.5, 'peak_rss_gb': 4.8}, 'speedup_malloc': 1.3,
         'onnx': {'median_s': 4.0}, 'ratio_onnx': 1.25}
  pipe = {'case': 'input_pipeline', 'frame_size': [1080, 1920], 'crop_size': [512, 512],
          'worker_count': 2, 'images_per_s': 20.0}
  table = benchmark._format([row, pipe])
  assert '8000.0' in table and '1.60' in table
  assert '6500.0     1.30' in table  # the reference with our malloc settings
  assert '4000.0    1.25' in table  # onnxruntime on our export, ours / its time
  assert '20.00 img/s = 50.0x the train step\'s 0.40 img/s' in table
