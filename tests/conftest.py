"""Test set-up: 8 fake CPU devices (for sharding tests) and fast compiles.

Both must be set before jax is imported anywhere, which is why they live here.
"""
import os

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import jax  # noqa: E402  (after the environment above)

jax.config.update('jax_disable_most_optimizations', True)
