"""GPU readiness read from the training step's HLO, on the test model.

bf16 with XLA convolutions (the GPU setting) is lowered, not compiled: the lowered
HLO is what a GPU compile starts from, and an XLA:CPU compile widens bf16 to f32.
"""
import jax
import jax.numpy as jnp

from fanet_jax.speed import hlo_report


def test_callbacks_and_aliasing_are_seen():
  def step(state, x):
    jax.debug.print('x {}', x.sum())
    return state + x, x.sum()
  text = jax.jit(step, donate_argnums=0).lower(jnp.ones(3), jnp.ones(3)).as_text(
      dialect='hlo')
  report = hlo_report.analyze(text)
  assert report['host_callbacks'] == 1
  assert report['aliased_outputs'] == 1


def test_bf16_train_step_has_no_host_round_trips_and_donates_its_state():
  report = hlo_report.train_step_report('fanet_test_upernet', size=(64, 64),
                                        compile_cpu=False)
  lowered = report['lowered']
  assert lowered['host_transfers'] == 0 and lowered['host_callbacks'] == 0
  # Every convolution and matmul of forward and backward computes in bf16 ...
  assert set(lowered['convolutions']) == {'bf16'} and set(lowered['dots']) == {'bf16'}
  assert lowered['convolutions']['bf16'] > 100
  # ... on float32 master weights, with a float32 loss, and all state is donated.
  assert report['param_dtypes'] == ['float32'] and report['loss_dtype'] == 'float32'
  assert lowered['aliased_outputs'] == report['state_buffers']
