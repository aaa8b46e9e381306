"""`python -m fanet_jax.benchmark`: the one entry point for speed figures.

Each case runs in its own subprocess (so its peak memory is its own) and reports
compile time, the median of repeated timed runs after a warm-up, images/second,
achieved GFLOP/s (from XLA's own operation count of the compiled program) and the
peak resident memory. Paper figures, where a paper gives one, are printed beside
ours with the hardware they were measured on; they are not comparable machines.

  python -m fanet_jax.benchmark                      # every case
  python -m fanet_jax.benchmark --cases dense_attention_seg_infer deeplabv3plus_infer
  python -m fanet_jax.benchmark --json results.json
"""
import argparse
import dataclasses
import functools
import json
import resource
import statistics
import subprocess
import sys
import time
from typing import Callable, Optional


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


def _program(case: Case) -> tuple[Callable, tuple]:
  """The jitted function of a case and its arguments (state donated for training)."""
  import jax
  import jax.numpy as jnp
  import numpy as np

  from fanet_jax import losses, models, optim
  from fanet_jax import train_step as train_step_lib

  model = models.create(case.model)
  images = jnp.asarray(np.random.default_rng(0).normal(
      size=(case.batch, *case.size, case.channels)), jnp.float32)
  if not case.train:
    variables = jax.jit(functools.partial(model.init, train=True))(
        {'params': jax.random.key(0), 'dropout': jax.random.key(1)}, images[:1])
    return jax.jit(functools.partial(model.apply, train=False)), (variables, images)
  tx = optim.adamw(lambda step: 1e-4, betas=(0.9, 0.999), weight_decay=1e-3)
  state = jax.jit(functools.partial(train_step_lib.init_state, model, tx,
                                    image_shape=(1, *case.size, case.channels)))(
                                        jax.random.key(0))
  labels = jnp.zeros((case.batch, *case.size), jnp.int32)
  loss_fn = losses.make_loss_fn(aux_weight=0.5, ignore_index=255)
  step = jax.jit(train_step_lib.make_train_step(model, tx, loss_fn), donate_argnums=0)
  return step, (state, {'image': images, 'label': labels}, jax.random.key(2))


def run_case(name: str, repeats: int) -> dict:
  """Times one case in this process and returns its figures."""
  import jax

  case = CASES[name]
  fn, args = _program(case)
  start = time.perf_counter()
  compiled = fn.lower(*args).compile()
  compile_s = time.perf_counter() - start
  flops = (compiled.cost_analysis() or {}).get('flops', float('nan'))
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
  return {
      'case': name, 'model': case.model, 'batch': case.batch, 'size': list(case.size),
      'train': case.train, 'compile_s': compile_s, 'median_s': median,
      'images_per_s': case.batch / median, 'gflops_per_s': flops / median / 1e9,
      'peak_rss_gb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
      'paper_ms': case.paper_ms, 'paper_hardware': case.paper_hardware,
      'device': str(jax.devices()[0].device_kind),
  }


def _format(rows: list[dict]) -> str:
  head = (f'{"case":<26} {"batch":>5} {"size":>9} {"compile s":>9} {"median ms":>10} '
          f'{"img/s":>7} {"GFLOP/s":>8} {"peak GB":>8}  paper')
  lines = [head, '-' * len(head)]
  for r in rows:
    paper = (f'{r["paper_ms"]:.1f} ms ({r["paper_hardware"]})' if r['paper_ms'] else '')
    size = 'x'.join(map(str, r['size']))
    lines.append(f'{r["case"]:<26} {r["batch"]:>5} {size:>9} {r["compile_s"]:>9.1f} '
                 f'{1e3 * r["median_s"]:>10.1f} {r["images_per_s"]:>7.2f} '
                 f'{r["gflops_per_s"]:>8.1f} {r["peak_rss_gb"]:>8.2f}  {paper}')
  return '\n'.join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--cases', nargs='+', default=list(CASES), choices=list(CASES))
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--json', help='also write the figures to this file')
  parser.add_argument('--worker', help=argparse.SUPPRESS)  # one case, JSON to stdout
  args = parser.parse_args(argv)
  if args.worker:
    print(json.dumps(run_case(args.worker, args.repeats)))
    return 0
  rows = []
  for name in args.cases:
    out = subprocess.run([sys.executable, '-m', 'fanet_jax.benchmark', '--worker', name,
                          '--repeats', str(args.repeats)], capture_output=True, text=True)
    if out.returncode:
      print(f'{name}: failed\n{out.stderr[-2000:]}', file=sys.stderr)
      continue
    rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(_format(rows[-1:]).splitlines()[-1], flush=True)
  print()
  print(_format(rows))
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(rows, f, indent=2)
  return 0


if __name__ == '__main__':
  sys.exit(main())
