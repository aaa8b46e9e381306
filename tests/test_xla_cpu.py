"""xla_cpu.configure and FANet.remat_stages: with the flags, rematerialising stage 0
lowers the XLA temporaries of the backbone's gradient and leaves every number equal."""
import json
import os
import subprocess
import sys

from fanet_jax.runtime import xla_cpu

# Runs in a fresh process: XLA reads XLA_FLAGS once, when JAX starts its backend.
_PROGRAM = """
import functools, json
from fanet_jax.runtime import xla_cpu
xla_cpu.configure()
import jax, jax.numpy as jnp, numpy as np
jax.config.update('jax_disable_most_optimizations', True)
from fanet_jax import models
x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 64, 64, 3)), jnp.float32)
temp, grads = {}, {}
# Rematerialisation leaves the parameters as they are: one init for both.
variables = jax.jit(functools.partial(
    models.create('fanet_test', conv_impl='lax').init, train=True))(
        {'params': jax.random.key(0), 'dropout': jax.random.key(1)}, x[:1])
for stages in [(), (0,)]:  # lax convolutions: compiled in half the time
  model = models.create('fanet_test', remat_stages=stages, conv_impl='lax')
  def loss(params):
    features = model.apply({'params': params}, x, train=True,
                           rngs={'dropout': jax.random.key(2)})
    return sum(jnp.mean(f ** 2) for f in features.values())
  compiled = jax.jit(jax.grad(loss)).lower(variables['params']).compile()
  temp[str(stages)] = compiled.memory_analysis().temp_size_in_bytes
  grads[stages] = compiled(variables['params'])
diff = max(jax.tree.leaves(jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))),
                                        grads[()], grads[(0,)])))
print(json.dumps({'temp': temp, 'max_abs_diff': diff}))
"""


def test_configure_adds_flags_and_keeps_the_users(monkeypatch):
  monkeypatch.setenv('XLA_FLAGS', '--xla_force_host_platform_device_count=2')
  xla_cpu.configure()
  xla_cpu.configure()  # twice: nothing added again
  assert os.environ['XLA_FLAGS'] == ('--xla_force_host_platform_device_count=2 '
                                     '--xla_cpu_enable_concurrency_optimized_scheduler=false')
  monkeypatch.setenv('XLA_FLAGS', '--xla_cpu_enable_concurrency_optimized_scheduler=true')
  xla_cpu.configure()
  assert os.environ['XLA_FLAGS'] == '--xla_cpu_enable_concurrency_optimized_scheduler=true'
  monkeypatch.delenv('XLA_FLAGS')
  xla_cpu.configure()
  assert os.environ['XLA_FLAGS'] == '--xla_cpu_enable_concurrency_optimized_scheduler=false'


def test_remat_stage_lowers_temporaries_with_equal_gradients():
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  out = subprocess.run([sys.executable, '-c', _PROGRAM], capture_output=True, text=True,
                       check=True, env=env).stdout
  result = json.loads(out.strip().splitlines()[-1])
  assert result['temp']['(0,)'] < 0.95 * result['temp']['()'], result
  assert result['max_abs_diff'] == 0.0, result
