"""`python -m fanet_jax.speed.benchmark`: the one entry point for speed figures.

Each case (cases.py: compile time, median time, images/second, exact multiply-adds,
GFLOP/s, peak memory) runs in its own subprocess, so its peak memory is its own: this
module re-invokes itself with `--worker CASE` (or `--torch-worker CASE`), which runs
the case and prints one JSON line. Our processes run with the XLA:CPU flags of
runtime/xla_cpu.py, as launch.py's do. Where the independent PyTorch reference
implements the model (FANet), the same case is then timed in PyTorch in its own
subprocesses of the same run (see torch_baseline.py): as its users run it
(`speedup` = PyTorch time / ours) and with the glibc malloc settings our JAX
processes use (runtime/allocator.py; `torch*`, `speedup*`), since those settings
speed up PyTorch's step as much as ours. The inference cases of onnx_baseline.py
are also exported to ONNX (fanet_jax/export.py) and timed in onnxruntime in their
own subprocess (`ort ms`; `jax/ort` = our time / onnxruntime's). The
`input_pipeline` case times the grain training loader at the ZeroWaste-f transforms
(data_loading.py) and prints its images/second beside what the training step
consumes. Paper figures, where a paper gives one, are printed beside ours with the
hardware they were measured on; they are not comparable machines.

  python -m fanet_jax.speed.benchmark                      # every case
  python -m fanet_jax.speed.benchmark --cases fanet_upernet_train fanet_upernet_infer
  python -m fanet_jax.speed.benchmark --json results.json --no-torch --no-onnx
  python -m fanet_jax.speed.benchmark --hlo-report        # GPU-readiness facts of the step
"""
import argparse
import json
import os
import platform
import subprocess
import sys
from typing import Optional

from fanet_jax.runtime import allocator, xla_cpu
from fanet_jax.speed import onnx_baseline, torch_baseline
from fanet_jax.speed.cases import CASES, PIPELINE_CASE, TRAIN_CASE
from fanet_jax.speed.cases import run_case, run_onnx_case, run_pipeline_case
from fanet_jax.speed.cases import run_torch_case

# The module the worker subprocesses run: this one (its `main` takes `--worker`).
_MODULE = 'fanet_jax.speed.benchmark'


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
  out = subprocess.run([sys.executable, '-m', _MODULE, *args],
                       capture_output=True, text=True,
                       env=None if env is None else {**os.environ, **env})
  if out.returncode:
    print(f'{" ".join(args)}: failed\n{out.stderr[-2000:]}', file=sys.stderr)
    return None
  return json.loads(out.stdout.strip().splitlines()[-1])


def _format(rows: list[dict]) -> str:
  head = (f'{"case":<26} {"batch":>5} {"size":>9} {"compile s":>9} {"median ms":>10} '
          f'{"img/s":>7} {"GMAC":>6} {"GFLOP/s":>8} {"peak GB":>8} {"torch ms":>9} '
          f'{"torch GB":>8} {"speedup":>7} {"torch* ms":>9} {"speedup*":>8} {"ort ms":>8} '
          f'{"jax/ort":>7}  paper')
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
    t = r.get('onnx')
    ref += (f' {1e3 * t["median_s"]:>8.1f} {r["ratio_onnx"]:>7.2f}' if t
            else f' {"-":>8} {"-":>7}')
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
  """The command line (and, with `--worker` / `--torch-worker`, one case); returns 0."""
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  names = list(CASES) + [PIPELINE_CASE]
  parser.add_argument('--cases', nargs='+', default=names, choices=names)
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--no-torch', action='store_true',
                      help='skip the PyTorch reference timings')
  parser.add_argument('--no-onnx', action='store_true',
                      help='skip the onnxruntime timings of our ONNX export')
  parser.add_argument('--json', help='also write the figures to this file')
  parser.add_argument('--hlo-report', action='store_true',
                      help='print GPU-readiness facts of the compiled train step and exit')
  parser.add_argument('--worker', help=argparse.SUPPRESS)  # one case, JSON to stdout
  parser.add_argument('--torch-worker', help=argparse.SUPPRESS)
  parser.add_argument('--onnx-worker', help=argparse.SUPPRESS)
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
  if args.onnx_worker:
    print(json.dumps(run_onnx_case(args.onnx_worker, args.repeats)))
    return 0
  if args.hlo_report:
    from fanet_jax.speed import hlo_report  # pylint: disable=import-outside-toplevel
    print(json.dumps(hlo_report.main_report(), indent=2))
    return 0
  info = machine()
  print(f'machine: {info["cpu"]}, {info["cores"]} cores, {info["memory_gb"]:.0f} GB; '
        f'load average {info["load_average"][0]:.2f}', flush=True)
  missing = onnx_baseline.missing_packages()
  onnx_cases = [] if args.no_onnx or missing else onnx_baseline.CASES
  if missing and not args.no_onnx and set(args.cases) & set(onnx_baseline.CASES):
    print(f'onnxruntime timings skipped: {", ".join(missing)} not installed '
          '(requirements-export.txt, docs/deployment.md)', flush=True)
  rows = []
  for name in args.cases:
    row = _worker(['--worker', name, '--repeats', str(args.repeats)])
    if row is None:
      continue
    if (name in CASES and not args.no_torch
        and CASES[name].model in torch_baseline.MODELS):
      # As PyTorch users run it, then with our malloc settings (runtime/allocator.py).
      for key, env in (('', None), ('_malloc', allocator.ENVIRONMENT)):
        torch_row = _worker(['--torch-worker', name, '--repeats', str(args.repeats)], env)
        if torch_row:
          row['torch' + key] = torch_row
          row['speedup' + key] = torch_row['median_s'] / row['median_s']
    if name in onnx_cases:
      onnx_row = _worker(['--onnx-worker', name, '--repeats', str(args.repeats)])
      if onnx_row:
        row['onnx'] = onnx_row
        row['ratio_onnx'] = row['median_s'] / onnx_row['median_s']
    rows.append(row)
    print(_format(rows[-1:]).splitlines()[-1], flush=True)
  info['load_average_end'] = list(os.getloadavg())
  print()
  print(_format(rows))
  if any('torch' in r for r in rows):
    print('torch: the PyTorch reference as its users run it; torch*: the same with '
          'fanet_jax\'s malloc settings (fanet_jax/runtime/allocator.py), as ours runs')
  for r in rows:
    if 'onnx' in r:
      o = r['onnx']
      print(f'ort: {r["case"]} exported by fanet_jax/export.py in {o["export_s"]:.0f} s '
            f'({o["file_mb"]:.0f} MB), onnxruntime {o["version"]}, CPUExecutionProvider, '
            f'{o["threads"]} on {o["cores"]} cores; jax/ort: our time / onnxruntime\'s')
  print(f'machine: {info["cpu"]}, {info["cores"]} cores; load average '
        f'{info["load_average"][0]:.2f} at start, {info["load_average_end"][0]:.2f} at end')
  if args.json:
    with open(args.json, 'w') as f:
      json.dump({'machine': info, 'cases': rows}, f, indent=2)
  return 0


if __name__ == '__main__':
  sys.exit(main())
