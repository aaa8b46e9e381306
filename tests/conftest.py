"""Test set-up: 8 fake CPU devices (for sharding tests) and a compilation cache.

Both must be set before jax is imported anywhere, which is why they live here.
`jax_disable_most_optimizations` roughly halves XLA:CPU compile times of the small
test models (docs/performance.md, Test-suite compile settings), which dominate the suite; the
persistent cache lets tests that build the same step again skip the second compile.
"""
import os
import tempfile

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import jax  # noqa: E402  (after the environment above)

jax.config.update('jax_disable_most_optimizations', True)
jax.config.update('jax_compilation_cache_dir',
                  tempfile.mkdtemp(prefix='fanet-jax-test-xla-cache-'))
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
