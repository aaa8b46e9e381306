"""The onnxruntime side of `python -m fanet_jax.speed.benchmark`: our export, timed in ORT.

An inference case's model, randomly initialised as the JAX case initialises it, is
exported as `python -m fanet_jax.export --format onnx` exports a run (jax2onnx, the
plain conv formulations, a dynamic batch; fanet_jax/export.py) and timed in
onnxruntime in its own process: CPUExecutionProvider, default session options (so
onnxruntime's own thread pool, one intra-op thread per physical core, and its
default graph optimisations), float32, random normal input. The first run is a
warm-up; the export time is reported apart. Needs the export extra
(requirements-export.txt); without it the benchmark prints a note and goes on.
"""
import importlib.util
import os
import resource
import statistics
import tempfile
import time

# The benchmark's inference cases timed in onnxruntime too.
CASES = ('fanet_upernet_infer', 'dense_attention_seg_infer')
PACKAGES = ('jax2onnx', 'onnxruntime')


def missing_packages() -> list[str]:
  """The packages of the export extra that are not installed."""
  return [p for p in PACKAGES if importlib.util.find_spec(p) is None]


def run_case(model_name: str, batch: int, size: tuple[int, int], channels: int,
             repeats: int, num_classes: int) -> dict:
  """Exports the model and times it in onnxruntime.

  Args:
    model_name: a factory segmentor.
    batch: batch size.
    size: (H, W).
    channels: input channels (3 RGB, 1 depth).
    repeats: timed runs after the warm-up.
    num_classes: the segmentor's classes.

  Returns:
    {'median_s', 'times_s', 'images_per_s', 'export_s', 'file_mb', 'peak_rss_gb',
    'threads', 'version'}.
  """
  import functools

  import jax
  import jax.numpy as jnp
  import numpy as np
  import onnxruntime

  from fanet_jax import export, models
  from fanet_jax.runtime import allocator

  overrides = ({'conv_impl': 'lax'} if model_name.startswith('fanet') else
               {'deconv_impl': 'lax'} if model_name.startswith('dense_attention') else {})
  model = models.create(model_name, num_classes=num_classes, **overrides)
  one = jnp.zeros((1, *size, channels), jnp.float32)
  variables = jax.jit(functools.partial(model.init, train=True))(
      {'params': jax.random.key(0), 'dropout': jax.random.key(1)}, one)
  variables = {k: variables[k] for k in ('params', 'batch_stats') if k in variables}
  spec = jax.ShapeDtypeStruct(
      jax.export.symbolic_shape(f'batch, {size[0]}, {size[1]}, {channels}'), jnp.float32)
  start = time.perf_counter()
  proto = export.to_onnx(lambda x: model.apply(variables, x, train=False), spec, 'logits',
                         {'model': model_name})
  export_s = time.perf_counter() - start
  with tempfile.TemporaryDirectory() as folder:
    path = os.path.join(folder, 'model.onnx')
    with open(path, 'wb') as f:
      f.write(proto.SerializeToString())
    del proto
    file_mb = os.path.getsize(path) / 2**20
    session = onnxruntime.InferenceSession(path, providers=['CPUExecutionProvider'])
  images = np.random.default_rng(0).normal(size=(batch, *size, channels)).astype(np.float32)
  allocator.release_free_memory()
  times = []
  for i in range(repeats + 1):
    start = time.perf_counter()
    session.run(None, {'images': images})
    if i:
      times.append(time.perf_counter() - start)
  median = statistics.median(times)
  return {'median_s': median, 'times_s': times, 'images_per_s': batch / median,
          'export_s': export_s, 'file_mb': file_mb,
          'peak_rss_gb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
          'threads': "default (onnxruntime's documented default: one intra-op thread per physical core)",
          'cores': len(os.sched_getaffinity(0)), 'version': onnxruntime.__version__}
