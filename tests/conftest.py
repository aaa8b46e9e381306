"""Test set-up: 8 fake CPU devices (for sharding tests), launch.py's XLA:CPU flags, a
compilation cache, and the order of the files (the longest first).

The first two must be set before jax is imported anywhere, which is why they live here.
`jax_disable_most_optimizations` roughly halves XLA:CPU compile times of the small
test models (docs/performance.md, Test-suite compile settings), which dominate the suite; the
persistent cache lets tests that build the same step again skip the second compile.
"""
import os
import tempfile

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# launch.py's XLA:CPU flags, as the commands the tests call in-process would add them:
# JAX hashes XLA_FLAGS into every compilation-cache key, so a flag added half-way
# through a worker's tests made each later program miss the cache.
from fanet_jax.runtime import xla_cpu  # noqa: E402  (imports no jax)
xla_cpu.configure()

import jax  # noqa: E402  (after the environment above)

jax.config.update('jax_disable_most_optimizations', True)
# One cache for the whole run, shared by xdist's workers (they compile many of the
# same small programs), as the multi-process tests already share theirs; JAX writes
# each entry once and recompiles where an entry cannot be read.
_CACHE = os.path.join(tempfile.gettempdir(), 'fanet-jax-test-xla-cache-'
                      + os.environ.get('PYTEST_XDIST_TESTRUNUID', str(os.getpid())))
os.makedirs(_CACHE, exist_ok=True)
jax.config.update('jax_compilation_cache_dir', _CACHE)
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)

# The longest files first (pytest --durations), heaviest first: xdist's workers take
# whole files (--dist loadfile) in collection order as they become free, so the two
# finish close together instead of one running a long file alone at the end.
LONGEST_FIRST = ('test_imagenet_training.py', 'test_padding_gradients.py',
                 'test_crash_consistency.py', 'test_trainer.py', 'test_train_step.py',
                 'test_zerowaste_recipe.py', 'test_accumulation.py',
                 'test_torch_parity.py', 'test_export.py', 'test_conv_formulation.py',
                 'test_xla_cpu.py')


def pytest_collection_modifyitems(config, items):
  del config
  rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(LONGEST_FIRST)))
