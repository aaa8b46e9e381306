"""`python -m fanet_jax.export`: ONNX files that onnxruntime runs to the JAX model's
numbers at any batch size, a StableHLO file that a process without fanet_jax runs,
and one line for each bad input.

Workdirs are made without training (tests/runs.py).
"""
import functools
import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fanet_jax import config as config_lib
from fanet_jax import export

import runs as tiny_runs

STEP = 3
TINY = {
    'rgb': dict(model='fanet_test_upernet', dataset='synthetic_waste', img_scale=(64, 64)),
    'depth': dict(model='dense_attention_seg_test', modality='depth', num_classes=3,
                  dataset='synthetic_hands'),
}


def _workdir(root, modality):
  """(workdir, config, variables) of an untrained run with a best checkpoint."""
  config = config_lib.Config(**TINY[modality])
  workdir = str(root / modality)
  return workdir, config, tiny_runs.make_run(workdir, config, STEP)


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp('runs')
  return {m: _workdir(root, m) for m in TINY}


def _reference(config, variables, size, onnx=True):
  """export.check_images's images and the logits of the model export verified them
  against (the same program: the compilation cache has it)."""
  images = export.check_images(config, size)
  fn = export.model_function(export.export_config(config, onnx), variables, 'logits')
  return images, np.asarray(jax.jit(fn)(images))


# The depth models' ONNX path (max pools as slices: test_max_pool_as_slices_equals_
# reduce_window) was checked at export by hand (docs/deployment.md); the suite keeps
# FANet's for its time.
@pytest.mark.parametrize('modality,kind', [('rgb', 'classes')])
def test_onnx_runs_to_the_jax_numbers_at_any_batch(runs, modality, kind, capsys):
  pytest.importorskip('jax2onnx', reason='the export extra: requirements-export.txt')
  onnxruntime = pytest.importorskip('onnxruntime',
                                    reason='the export extra: requirements-export.txt')
  workdir, config, variables = runs[modality]
  assert export.main(['--workdir', workdir, '--format', 'onnx', '--size', '32', '64',
                      '--output-kind', kind]) == 0
  out = capsys.readouterr().out
  assert f'checkpoint best (step {STEP})' in out and 'onnxruntime vs JAX' in out
  path = os.path.join(workdir, 'export', 'model-32x64.onnx')
  with open(path + '.json') as f:
    info = json.load(f)
  assert info['input']['shape'] == ['batch', 32, 64, config.image_channels]
  session = onnxruntime.InferenceSession(path, providers=['CPUExecutionProvider'])
  metadata = session.get_modelmeta().custom_metadata_map
  assert json.loads(metadata['class_names']) == info['class_names']
  if modality == 'rgb':
    assert info['normalisation']['mean'] == list(config.mean)
  else:
    assert info['normalisation']['depth_range_mm'] == list(config.depth_range_mm)
  images, logits = _reference(config, variables, (32, 64))
  for batch in (slice(0, 1), slice(1, 3)):  # 1 and 2 of export's 3 images
    got, want = session.run(None, {'images': images[batch]})[0], logits[batch]
    if kind == 'logits':
      assert got.shape == want.shape and np.abs(got - want).max() <= 1e-4
    else:
      assert got.shape == want.shape[:3]
      assert np.array_equal(export.differences(got, want, 'classes'), [0] * len(got))
      assert (got == want.argmax(-1)).mean() > 0.99


STABLEHLO_CHECK = """
import sys
import jax
import numpy as np
exported = jax.export.deserialize(bytearray(open(sys.argv[1], 'rb').read()))
images = np.load(sys.argv[2])
print(np.abs(np.asarray(exported.call(images)) - np.load(sys.argv[3])).max())
print(sorted(m for m in sys.modules if m.startswith('fanet_jax')))
"""


def test_stablehlo_runs_without_the_model_code(runs, tmp_path, capsys):
  pytest.importorskip('flatbuffers', reason='the export extra: requirements-export.txt')
  workdir, config, variables = runs['depth']
  out = str(tmp_path / 'hands.stablehlo')
  assert export.main(['--workdir', workdir, '--format', 'stablehlo', '--size', '32', '64',
                      '--output', out]) == 0
  assert 'jax.export.deserialize vs JAX' in capsys.readouterr().out
  images, logits = _reference(config, variables, (32, 64), onnx=False)
  np.save(tmp_path / 'images.npy', images[:2])  # another batch size than export's
  np.save(tmp_path / 'logits.npy', logits[:2])
  # A fresh process that imports jax and numpy only, with the repository off its path.
  result = subprocess.run(
      [sys.executable, '-c', STABLEHLO_CHECK, out, str(tmp_path / 'images.npy'),
       str(tmp_path / 'logits.npy')], capture_output=True, text=True, cwd=tmp_path,
      env={**os.environ, 'PYTHONPATH': '', 'JAX_PLATFORMS': 'cpu'}, check=True)
  diff, modules = result.stdout.split('\n')[:2]
  assert float(diff) <= 1e-4 and modules == '[]'


@pytest.mark.parametrize('args,message', [
    (['--workdir', '{tmp}/nothing'], 'no such folder'),
    (['--workdir', '{classifier}'], 'a classification model; this command takes '
     'segmentation models'),
    (['--workdir', '{run}', '--checkpoint', '9'], r"no checkpoint '9' \(steps in "
     r"checkpoints/: none, in best/: \[3\]\)"),
    (['--workdir', '{run}', '--size', '48', '64'],
     r"--size 48 64: height and width must be positive multiples of 32 \(the run's "
     'size_divisor'),
    (['--experiment', 'demo'], '--experiment and --weights go together'),
    (['--experiment', 'demo', '--weights', '{run}', '--set', 'model=fanet_micro_upernet'],
     "the weights do not fit model 'fanet_micro_upernet'"),
])
def test_bad_input_is_one_line(runs, tmp_path, capsys, args, message):
  classifier = tmp_path / 'classifier'
  classifier.mkdir()
  (classifier / 'config.json').write_text(
      config_lib.to_json(config_lib.load_experiment('imagenet_smoke')))
  args = [a.format(tmp=tmp_path, run=runs['rgb'][0], classifier=classifier) for a in args]
  if '--size' not in args:
    args += ['--size', '32', '32']
  assert export.main(args + ['--format', 'stablehlo']) == 2
  err = capsys.readouterr().err
  assert err.startswith('error: ') and err.count('\n') == 1
  assert re.search(message, err), err


def test_a_missing_package_is_one_line(runs, monkeypatch, capsys):
  import importlib.util
  find_spec = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, 'find_spec',
                      lambda name, *a: None if name == 'flatbuffers' else find_spec(name, *a))
  assert export.main(['--workdir', runs['rgb'][0], '--format', 'stablehlo',
                      '--size', '32', '32']) == 2
  err = capsys.readouterr().err
  assert err.count('\n') == 1 and 'needs flatbuffers: pip install -r requirements-export' in err


def test_max_pool_as_slices_equals_reduce_window():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 9, 8, 3)), jnp.float32)
  pool = functools.partial(jax.lax.reduce_window, init_value=-jnp.inf,
                           computation=jax.lax.max, window_dimensions=(1, 3, 3, 1),
                           window_strides=(1, 2, 2, 1))
  for padding in (((0, 0), (1, 1), (1, 1), (0, 0)), ((0, 0), (0, 2), (2, 1), (0, 0))):
    got = export._max_pool(x, (1, 3, 3, 1), (1, 2, 2, 1), padding, (1,) * 4, (1,) * 4)
    np.testing.assert_array_equal(got, pool(x, padding=padding))
