"""Process settings applied before a run allocates: XLA:CPU flags and the allocator."""


def configure_process() -> None:
  """launch.py's settings for a one-process command: the XLA:CPU flags (call before
  JAX starts its backend), then, on the CPU, the malloc settings."""
  import jax

  from fanet_jax.runtime import allocator, xla_cpu
  xla_cpu.configure()
  if jax.default_backend() == 'cpu':
    allocator.configure()
