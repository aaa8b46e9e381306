"""One case of `python -m fanet_jax.speed.benchmark`, built and timed in this process.

A case is a factory model at a batch and input size, timed for inference or for a
full training step (forward, loss, backward, AdamW; the state donated). `run_case`
reports compile time, the median of repeated timed runs after a warm-up,
images/second, the multiply-adds of the program (GMAC: exact, counted from the
jaxpr of the plain `lax` formulation, forward and backward for a training step,
without the recomputation of rematerialised blocks; see macs.py), GFLOP/s = 2 x
GMAC / median (an effective rate: the Winograd convs and upsampling.conv_upsampled
compute fewer) and the peak resident memory (after the allocator hands back what
compiling freed: `runtime/allocator.py`). `run_torch_case` times the same case in
the independent PyTorch reference (torch_baseline.py), `run_onnx_case` our ONNX
export of it in onnxruntime (onnx_baseline.py) and `run_pipeline_case` the
grain training loader (data_loading.py). Paper figures, where a paper gives one,
travel with the case. benchmark.py runs each of these in its own subprocess.
`jitted_train_step` is the one training step (optimiser, loss, donation) that the
timed cases and hlo_report.py's HLO facts are both taken from.
"""
import dataclasses
import functools
import resource
import statistics
import time
from typing import Any, Callable, Optional

from fanet_jax.runtime import allocator
from fanet_jax.speed import onnx_baseline, torch_baseline


@dataclasses.dataclass(frozen=True)
class Case:
  """One timed program.

  Attributes:
    model: factory name.
    batch: batch size.
    size: (H, W) input size.
    channels: input channels.
    train: time a full training step (forward, loss, backward, AdamW) instead of
      inference.
    paper_ms: the paper's latency for this case, if it reports one.
    paper_hardware: what the paper measured it on.
  """
  model: str
  batch: int
  size: tuple[int, int]
  channels: int = 3
  train: bool = False
  paper_ms: Optional[float] = None
  paper_hardware: str = ''


CASES = {
    'fanet_upernet_infer': Case('fanet_tiny_upernet', 1, (512, 512)),
    'fanet_upernet_train': Case('fanet_tiny_upernet', 2, (512, 512), train=True),
    'fanet_classifier_infer': Case('fanet_tiny_classifier', 8, (224, 224)),
    'dense_attention_seg_infer': Case('dense_attention_seg_r50', 1, (480, 640), 1,
                                      paper_ms=53.7, paper_hardware='GTX Titan Xp'),
    'deeplabv3plus_infer': Case('deeplabv3plus_r50', 1, (480, 640), 1,
                                paper_ms=47.8, paper_hardware='GTX Titan Xp'),
    # The other rows of DenseAttentionSeg's Table 2 (depth, 640x480) ...
    'fcn32s_infer': Case('fcn32s_vgg16', 1, (480, 640), 1, paper_ms=35.4,
                         paper_hardware='GTX Titan Xp'),
    'fcn16s_infer': Case('fcn16s_vgg16', 1, (480, 640), 1, paper_ms=35.6,
                         paper_hardware='GTX Titan Xp'),
    'fcn8s_infer': Case('fcn8s_vgg16', 1, (480, 640), 1, paper_ms=33.5,
                        paper_hardware='GTX Titan Xp'),
    'gcn_infer': Case('gcn_r50', 1, (480, 640), 1),
    'refinenet_infer': Case('refinenet_r50', 1, (480, 640), 1),
    # ... and of FANet's Tables 1 and 3 (ZeroWaste-f, 512x512 crops; no latencies there).
    'deeplabv3plus_rgb_infer': Case('deeplabv3plus_r50_rgb', 1, (512, 512)),
    'focalnet_tiny_upernet_infer': Case('focalnet_tiny_lrf_upernet', 1, (512, 512)),
    'focalnet_base_upernet_infer': Case('focalnet_base_lrf_upernet', 1, (512, 512)),
}
PIPELINE_CASE = 'input_pipeline'
TRAIN_CASE = 'fanet_upernet_train'  # whose consumption the input pipeline is set against
NUM_CLASSES = 5  # FANet's ZeroWaste-f classes


def _create(case: Case, dtype=None, plain: bool = False):
  """The case's model; `plain`: the lax formulation without rematerialisation (FANet
  models have a conv_impl and remat_stages), whose multiply-adds are the model's."""
  from fanet_jax import models  # pylint: disable=import-outside-toplevel
  overrides = {}
  if case.model.startswith(('fanet', 'focalnet')):
    overrides['conv_impl'] = 'lax' if plain else 'fast'
  if case.model.startswith('fanet') and plain:
    overrides['remat_stages'] = ()
  if dtype is not None:
    overrides['dtype'] = dtype
  return models.create(case.model, **overrides)


def jitted_train_step(model) -> tuple[Callable, Any]:
  """The training step every timed or inspected program runs, and its optimiser.

  AdamW (lr 1e-4, betas (0.9, 0.999), weight decay 1e-3) on cross-entropy (ignore
  255) + 0.5 x the auxiliary loss; the state argument is donated.

  Args:
    model: a segmentor of `models.create`.

  Returns:
    (jitted step(state, batch, rng), the optax optimiser for `train_step.init_state`).
  """
  import jax  # pylint: disable=import-outside-toplevel

  from fanet_jax import losses, optim  # pylint: disable=import-outside-toplevel
  from fanet_jax import train_step as train_step_lib  # pylint: disable=import-outside-toplevel

  tx = optim.adamw(lambda step: 1e-4, betas=(0.9, 0.999), weight_decay=1e-3)
  loss_fn = losses.make_loss_fn(aux_weight=0.5, ignore_index=255)
  step = jax.jit(train_step_lib.make_train_step(model, tx, loss_fn), donate_argnums=0)
  return step, tx


def _program(case: Case, dtype=None, plain: bool = False,
             abstract: bool = False) -> tuple[Callable, tuple]:
  """The jitted function of a case and its arguments (state donated for training).

  `abstract`: the arguments are ShapeDtypeStructs (nothing is initialised or run).
  """
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  from fanet_jax import train_step as train_step_lib  # pylint: disable=import-outside-toplevel

  model = _create(case, dtype, plain)
  rng = np.random.default_rng(0)
  make = (lambda f: functools.partial(jax.eval_shape, f)) if abstract else jax.jit
  shape = (case.batch, *case.size, case.channels)
  images = (jax.ShapeDtypeStruct(shape, jnp.float32) if abstract
            else jnp.asarray(rng.normal(size=shape), jnp.float32))
  if not case.train:
    one = jax.ShapeDtypeStruct((1, *shape[1:]), jnp.float32) if abstract else images[:1]
    variables = make(functools.partial(model.init, train=True))(
        {'params': jax.random.key(0), 'dropout': jax.random.key(1)}, one)
    return jax.jit(functools.partial(model.apply, train=False)), (variables, images)
  step, tx = jitted_train_step(model)
  state = make(functools.partial(train_step_lib.init_state, model, tx,
                                 image_shape=(1, *case.size, case.channels)))(
                                     jax.random.key(0))
  # Random labels: with constant ones the loss collapses and gradients underflow.
  labels = (jax.ShapeDtypeStruct(shape[:3], jnp.int32) if abstract else
            jnp.asarray(rng.integers(0, NUM_CLASSES, shape[:3]), jnp.int32))
  return step, (state, {'image': images, 'label': labels}, jax.random.key(2))


def count_case_macs(case: Case) -> dict:
  """Multiply-adds of the case's program in the plain formulation (traced only)."""
  from fanet_jax.speed import macs  # pylint: disable=import-outside-toplevel
  fn, args = _program(case, plain=True, abstract=True)
  return macs.count_macs(fn, *args)


def run_case(name: str, repeats: int) -> dict:
  """Times one JAX case in this process and returns its figures."""
  import jax  # pylint: disable=import-outside-toplevel

  case = CASES[name]
  fn, args = _program(case)
  start = time.perf_counter()
  compiled = fn.lower(*args).compile()
  compile_s = time.perf_counter() - start
  memory = compiled.memory_analysis()
  allocator.release_free_memory()
  times = []
  for i in range(repeats + 1):  # the first run is a warm-up
    start = time.perf_counter()
    out = compiled(*args)
    jax.block_until_ready(out)
    if case.train:  # the old state was donated: carry the new one
      args = (out[0],) + args[1:]
    if i:
      times.append(time.perf_counter() - start)
  median = statistics.median(times)
  peak_rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
  counted = count_case_macs(case)  # after timing: tracing memory is not the step's
  return {
      'case': name, 'model': case.model, 'batch': case.batch, 'size': list(case.size),
      'train': case.train, 'compile_s': compile_s, 'median_s': median, 'times_s': times,
      'images_per_s': case.batch / median, 'gmacs': counted['layers'] / 1e9,
      'interpolation_gmacs': counted['interpolation'] / 1e9,
      'gflops_per_s': 2 * counted['layers'] / median / 1e9,
      'peak_rss_gb': peak_rss_gb,
      'xla_temp_gb': memory.temp_size_in_bytes / 2**30,
      'xla_argument_gb': memory.argument_size_in_bytes / 2**30,
      'paper_ms': case.paper_ms, 'paper_hardware': case.paper_hardware,
      'device': str(jax.devices()[0].device_kind), 'jax': jax.__version__,
  }


def run_torch_case(name: str, repeats: int) -> dict:
  """Times the PyTorch reference of one case in this process."""
  case = CASES[name]
  return torch_baseline.run_case(case.model, case.batch, case.size, case.train, repeats,
                                num_classes=NUM_CLASSES)


def run_onnx_case(name: str, repeats: int) -> dict:
  """Times one inference case exported to ONNX, in onnxruntime, in this process."""
  case = CASES[name]
  num_classes = NUM_CLASSES if case.channels == 3 else 3  # the depth models' classes
  return onnx_baseline.run_case(case.model, case.batch, case.size, case.channels, repeats,
                                num_classes)


def run_pipeline_case(repeats: int) -> dict:
  """Images/second of the grain training loader (repeats scale the timed batches)."""
  from fanet_jax.speed import data_loading  # pylint: disable=import-outside-toplevel
  return {'case': PIPELINE_CASE, **data_loading.run_case(num_batches=8 * repeats)}
