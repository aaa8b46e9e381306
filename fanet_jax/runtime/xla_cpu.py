"""XLA:CPU flags our processes set before JAX starts its backend.

`--xla_cpu_enable_concurrency_optimized_scheduler=false`: XLA:CPU's default
instruction order favours running independent work concurrently and ignores memory;
it also moves the recomputation of rematerialised blocks (`FANet.remat_stages`) up
next to the forward pass, where it saves nothing. Under the memory-minimising
scheduler the FANet-tiny segmentor's train step needs fewer XLA temporaries at the
same step time, and fewer still with stage 0 rematerialised (docs/performance.md,
Memory-minimising scheduler and stage-0 remat). The flags are CPU-only: other backends
ignore them.
"""
import os

FLAGS = {'xla_cpu_enable_concurrency_optimized_scheduler': 'false'}


def configure() -> None:
  """Adds FLAGS to the XLA_FLAGS environment variable; a flag already there wins.

  XLA reads XLA_FLAGS once, when JAX starts its first backend: call this before
  anything asks JAX for devices or runs a computation.
  """
  current = os.environ.get('XLA_FLAGS', '')
  added = [f'--{name}={value}' for name, value in FLAGS.items()
           if f'--{name}=' not in current]
  os.environ['XLA_FLAGS'] = ' '.join([current, *added]).strip()
