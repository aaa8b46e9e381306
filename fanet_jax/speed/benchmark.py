"""`python -m fanet_jax.speed.benchmark`: the one entry point for speed figures.

Each case runs in its own subprocess (so its peak memory is its own) and reports
compile time, the median of repeated timed runs after a warm-up, images/second, the
multiply-adds of the program (GMAC: exact, counted from the jaxpr of the plain `lax`
formulation, forward and backward for a training step, without the recomputation of
rematerialised blocks; see macs.py), GFLOP/s = 2 x GMAC / median (an effective rate:
the Winograd convs and upsampling.conv_upsampled compute fewer) and the peak resident
memory (after the allocator hands back what compiling freed; done the same way for
PyTorch). Our processes run with the XLA:CPU flags of xla_cpu.py, as launch.py's do.
Where the independent PyTorch reference implements the model (FANet), the same case
is then timed in PyTorch in its own subprocesses of the same run (see torch_baseline.py):
as its users run it (`speedup` = PyTorch time / ours) and with the glibc malloc
settings our JAX processes use (allocator.py; `torch*`, `speedup*`), since those
settings speed up PyTorch's step as much as ours. The `input_pipeline` case times the
grain training loader at the ZeroWaste-f transforms (data_loading.py) and prints its images/second beside what the
training step consumes. Paper figures, where a paper gives one, are printed beside
ours with the hardware they were measured on; they are not comparable machines.

  python -m fanet_jax.speed.benchmark                      # every case
  python -m fanet_jax.speed.benchmark --cases fanet_upernet_train fanet_upernet_infer
  python -m fanet_jax.speed.benchmark --json results.json --no-torch
  python -m fanet_jax.speed.benchmark --hlo-report        # GPU-readiness facts of the step
"""
import argparse
import dataclasses
import functools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Callable, Optional

from fanet_jax.runtime import allocator, xla_cpu
from fanet_jax.speed import torch_baseline


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
}
PIPELINE_CASE = 'input_pipeline'
TRAIN_CASE = 'fanet_upernet_train'  # whose consumption the input pipeline is set against
NUM_CLASSES = 5  # FANet's ZeroWaste-f classes


def _create(case: Case, dtype=None, plain: bool = False):
  """The case's model; `plain`: the lax formulation without rematerialisation (FANet
  models have a conv_impl and remat_stages), whose multiply-adds are the model's."""
  from fanet_jax import models  # pylint: disable=import-outside-toplevel
  overrides = {}
  if case.model.startswith('fanet'):
    overrides['conv_impl'] = 'lax' if plain else 'fast'
    if plain:
      overrides['remat_stages'] = ()
  if dtype is not None:
    overrides['dtype'] = dtype
  return models.create(case.model, **overrides)


def _program(case: Case, dtype=None, plain: bool = False,
             abstract: bool = False) -> tuple[Callable, tuple]:
  """The jitted function of a case and its arguments (state donated for training).

  `abstract`: the arguments are ShapeDtypeStructs (nothing is initialised or run).
  """
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  from fanet_jax import losses, optim  # pylint: disable=import-outside-toplevel
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
  tx = optim.adamw(lambda step: 1e-4, betas=(0.9, 0.999), weight_decay=1e-3)
  state = make(functools.partial(train_step_lib.init_state, model, tx,
                                 image_shape=(1, *case.size, case.channels)))(
                                     jax.random.key(0))
  # Random labels: with constant ones the loss collapses and gradients underflow.
  labels = (jax.ShapeDtypeStruct(shape[:3], jnp.int32) if abstract else
            jnp.asarray(rng.integers(0, NUM_CLASSES, shape[:3]), jnp.int32))
  loss_fn = losses.make_loss_fn(aux_weight=0.5, ignore_index=255)
  step = jax.jit(train_step_lib.make_train_step(model, tx, loss_fn), donate_argnums=0)
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


def run_pipeline_case(repeats: int) -> dict:
  """Images/second of the grain training loader (repeats scale the timed batches)."""
  from fanet_jax.speed import data_loading  # pylint: disable=import-outside-toplevel
  return {'case': PIPELINE_CASE, **data_loading.run_case(num_batches=8 * repeats)}


def machine() -> dict:
  """What the figures were measured on."""
  cpu = platform.processor() or platform.machine()
  try:
    with open('/proc/cpuinfo') as f:
      cpu = next(line.split(':', 1)[1].strip() for line in f
                 if line.startswith('model name'))
  except (OSError, StopIteration):
    pass
  return {'cpu': cpu, 'cores': len(os.sched_getaffinity(0)),
          'memory_gb': os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30,
          'load_average': list(os.getloadavg())}


def _worker(args: list[str], env: Optional[dict] = None) -> Optional[dict]:
  out = subprocess.run([sys.executable, '-m', 'fanet_jax.speed.benchmark', *args],
                       capture_output=True, text=True,
                       env=None if env is None else {**os.environ, **env})
  if out.returncode:
    print(f'{" ".join(args)}: failed\n{out.stderr[-2000:]}', file=sys.stderr)
    return None
  return json.loads(out.stdout.strip().splitlines()[-1])


def _format(rows: list[dict]) -> str:
  head = (f'{"case":<26} {"batch":>5} {"size":>9} {"compile s":>9} {"median ms":>10} '
          f'{"img/s":>7} {"GMAC":>6} {"GFLOP/s":>8} {"peak GB":>8} {"torch ms":>9} '
          f'{"torch GB":>8} {"speedup":>7} {"torch* ms":>9} {"speedup*":>8}  paper')
  lines = [head, '-' * len(head)]
  for r in rows:
    if r['case'] == PIPELINE_CASE:
      continue
    paper = (f'{r["paper_ms"]:.1f} ms ({r["paper_hardware"]})' if r['paper_ms'] else '')
    size = 'x'.join(map(str, r['size']))
    t = r.get('torch')
    ref = (f'{1e3 * t["median_s"]:>9.1f} {t["peak_rss_gb"]:>8.2f} {r["speedup"]:>7.2f}'
           if t else f'{"-":>9} {"-":>8} {"-":>7}')
    t = r.get('torch_malloc')
    ref += (f' {1e3 * t["median_s"]:>9.1f} {r["speedup_malloc"]:>8.2f}' if t
            else f' {"-":>9} {"-":>8}')
    lines.append(f'{r["case"]:<26} {r["batch"]:>5} {size:>9} {r["compile_s"]:>9.1f} '
                 f'{1e3 * r["median_s"]:>10.1f} {r["images_per_s"]:>7.2f} '
                 f'{r["gmacs"]:>6.1f} {r["gflops_per_s"]:>8.1f} {r["peak_rss_gb"]:>8.2f} '
                 f'{ref}  {paper}')
  by_case = {r['case']: r for r in rows}
  if PIPELINE_CASE in by_case:
    p = by_case[PIPELINE_CASE]
    line = (f'input pipeline (grain, ZeroWaste-f train transforms, '
            f'{p["frame_size"][1]}x{p["frame_size"][0]} PNG -> {p["crop_size"][0]} crops, '
            f'{p["worker_count"]} workers): {p["images_per_s"]:.2f} img/s')
    if TRAIN_CASE in by_case:
      step = by_case[TRAIN_CASE]['images_per_s']
      line += f' = {p["images_per_s"] / step:.1f}x the train step\'s {step:.2f} img/s'
    lines.append(line)
  return '\n'.join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  names = list(CASES) + [PIPELINE_CASE]
  parser.add_argument('--cases', nargs='+', default=names, choices=names)
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--no-torch', action='store_true',
                      help='skip the PyTorch reference timings')
  parser.add_argument('--json', help='also write the figures to this file')
  parser.add_argument('--hlo-report', action='store_true',
                      help='print GPU-readiness facts of the compiled train step and exit')
  parser.add_argument('--worker', help=argparse.SUPPRESS)  # one case, JSON to stdout
  parser.add_argument('--torch-worker', help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  xla_cpu.configure()  # as launch.py does, before JAX starts its backend
  if args.worker:
    allocator.configure()  # as launch.py does on the CPU
    result = (run_pipeline_case(args.repeats) if args.worker == PIPELINE_CASE
              else run_case(args.worker, args.repeats))
    print(json.dumps(result))
    return 0
  if args.torch_worker:
    print(json.dumps(run_torch_case(args.torch_worker, args.repeats)))
    return 0
  if args.hlo_report:
    from fanet_jax.speed import hlo_report  # pylint: disable=import-outside-toplevel
    print(json.dumps(hlo_report.main_report(), indent=2))
    return 0
  info = machine()
  print(f'machine: {info["cpu"]}, {info["cores"]} cores, {info["memory_gb"]:.0f} GB; '
        f'load average {info["load_average"][0]:.2f}', flush=True)
  rows = []
  for name in args.cases:
    row = _worker(['--worker', name, '--repeats', str(args.repeats)])
    if row is None:
      continue
    if (name in CASES and not args.no_torch
        and CASES[name].model in torch_baseline.MODELS):
      # As PyTorch users run it, then with our malloc settings (allocator.py).
      for key, env in (('', None), ('_malloc', allocator.ENVIRONMENT)):
        torch_row = _worker(['--torch-worker', name, '--repeats', str(args.repeats)], env)
        if torch_row:
          row['torch' + key] = torch_row
          row['speedup' + key] = torch_row['median_s'] / row['median_s']
    rows.append(row)
    print(_format(rows[-1:]).splitlines()[-1], flush=True)
  info['load_average_end'] = list(os.getloadavg())
  print()
  print(_format(rows))
  if any('torch' in r for r in rows):
    print('torch: the PyTorch reference as its users run it; torch*: the same with '
          'fanet_jax\'s malloc settings (fanet_jax/allocator.py), as ours runs')
  print(f'machine: {info["cpu"]}, {info["cores"]} cores; load average '
        f'{info["load_average"][0]:.2f} at start, {info["load_average_end"][0]:.2f} at end')
  if args.json:
    with open(args.json, 'w') as f:
      json.dump({'machine': info, 'cases': rows}, f, indent=2)
  return 0


if __name__ == '__main__':
  sys.exit(main())
