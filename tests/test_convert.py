"""Weight conversion PyTorch <-> Flax: the parts that need no PyTorch.

The Flax -> state dict -> Flax round trip (shapes traced, random values) and the
command line's errors, none of which needs torch: this module never skips. The
comparisons with the independent PyTorch reference (`fanet_jax/pytorch/reference.py`)
and the `.pth` files are in tests/test_torch_parity.py, which needs the test extra.
"""
import os
import subprocess
import sys

import jax
import numpy as np

import model_shapes
from fanet_jax.pytorch import convert, state_dict


def test_round_trip_is_the_identity():
  rng = np.random.default_rng(0)
  variables = jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(s.dtype),
                           model_shapes.shapes('fanet_tiny_upernet'))
  state = convert.to_torch_state_dict('fanet_tiny_upernet', variables)
  assert state['decode_head.psp_modules.0.1.conv.weight'].shape == (256, 768, 1, 1)
  assert state['backbone.stages.2.7.attn.ctx_conv.weight'].shape == (192, 48, 7, 7)
  tracked = state['auxiliary_head.convs.0.bn.num_batches_tracked']
  assert tracked.dtype == np.int64 and tracked.shape == () and tracked == 0
  back = convert.from_torch_state_dict('fanet_tiny_upernet', state)
  flat, flat_back = model_shapes.flat(variables), model_shapes.flat(back)
  assert flat.keys() == flat_back.keys()
  assert all(np.array_equal(flat[k], flat_back[k]) and flat_back[k].dtype == flat[k].dtype
             for k in flat)
  # A segmentor's variables give its backbone to a backbone-only export.
  backbone = convert.to_torch_state_dict('fanet_tiny', variables)
  assert np.array_equal(backbone['stages.3.1.mlp.fc2.weight'],
                        state['backbone.stages.3.1.mlp.fc2.weight'])


def _run(*argv) -> int:
  return convert.main([str(a) for a in argv])


def test_cli_errors(tmp_path, capsys):
  sd = tmp_path / 'sd.npz'
  np.savez(sd, x=np.zeros(1))
  (tmp_path / 'sd.h5').write_bytes(b'')
  cases = [
      (('--model', 'fanet_tiny', '--input', tmp_path / 'no.pth', '--output',
        tmp_path / 'o1'), 'no such file'),
      (('--model', 'fanet_tiny', '--input', tmp_path / 'sd.h5', '--output',
        tmp_path / 'o2'), 'unknown file type'),
      (('--model', 'fanet_huge', '--input', sd, '--output', tmp_path / 'o3'),
       "unknown model 'fanet_huge'"),
      (('--model', 'fanet_test', '--input', sd, '--output', tmp_path),
       'already exists'),
  ]
  for argv, text in cases:
    assert _run(*argv) == 2
    assert text in capsys.readouterr().err


def test_cli_without_torch_names_the_install_command(tmp_path, capsys, monkeypatch):
  # Without torch, .pth files fail with the install command (before reading them).
  (tmp_path / 'args.pth.tar').write_bytes(b'')
  monkeypatch.setitem(sys.modules, 'torch', None)
  assert _run('--model', 'fanet_test', '--input', tmp_path / 'args.pth.tar',
              '--output', tmp_path / 'o4') == 2
  assert state_dict.TORCH_INSTALL in capsys.readouterr().err


def test_cli_module_entry_point_fails_without_traceback(tmp_path):
  result = subprocess.run(
      [sys.executable, '-m', 'fanet_jax.pytorch.convert', '--model', 'fanet_tiny', '--input',
       str(tmp_path / 'missing.pth'), '--output', str(tmp_path / 'out')],
      capture_output=True, text=True, check=False,
      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
      env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  assert result.returncode == 2
  assert 'error:' in result.stderr and 'Traceback' not in result.stderr
