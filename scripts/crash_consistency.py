"""Crash consistency: a run killed again and again ends exactly where an uninterrupted
run ends.

  python scripts/crash_consistency.py [--seed 0] [--faults 12] [--root DIR]
  python scripts/crash_consistency.py --faults prepare:KILL,save:KILL,eval:TERM

A small segmentation run (the demo's data set at test size, FANet test widths,
12 steps, or 4 per fault if more, a checkpoint every 2, an evaluation every 4) is
trained twice from scratch with the same command, each in its own folder:
- straight through, once;
- interrupted: each launch gets one fault, a signal sent to the process at a seeded
  random moment, and is then started again with the same command, until the faults
  are spent; a last launch finishes the run.
A fault is WHERE:SIGNAL. WHERE is when the signal's timer starts in that launch: while
the data set is being generated (`prepare`, at its K-th example), after its K-th
training step (`step`), when its K-th checkpoint save has started in the background
(`save`), or when its K-th evaluation starts (`eval`); the signal follows after a
seeded delay, so it lands inside that work or shortly after it (the table says what
was unfinished on disk at that moment). SIGNAL is KILL (SIGKILL: nothing runs after
it), TERM (a scheduler's notice; the run must save and exit 75) or INT (Ctrl-C; the
run saves and exits 130; during data preparation it exits 130 without a checkpoint).
K and the delays come from `random.Random(seed)`: the same seed injects the same
faults at the same points (the exact instant still depends on the machine's speed).

Then the two runs must have written the same bits: every array of the final state
(parameters, BatchNorm statistics, optimiser state, step), the best checkpoint's step
and state, every line of metrics.jsonl (all but its wall-clock `time`) and
results.json. On CPU the computation is deterministic, so equality is exact; the
script prints what it injected, how each launch ended, and what it compared, and
exits 1 if anything differs or a fault was never injected. tests/test_crash_consistency.py
runs it with six faults.
"""
import argparse
import dataclasses
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # launch.py and fanet_jax, for the child and the comparison
SIGNALS = {'KILL': signal.SIGKILL, 'TERM': signal.SIGTERM, 'INT': signal.SIGINT}
# The exit status each signal must end a launch with (Popen: -N for death by signal N).
EXPECTED_EXIT = {'KILL': -signal.SIGKILL, 'TERM': 75, 'INT': 130}
# Per WHERE: the range of K, and of the delay in seconds after that point.
WHERES = {'prepare': ((1, 20), (0.0, 0.05)), 'step': ((1, 4), (0.0, 0.3)),
          'save': ((1, 2), (0.0, 0.15)), 'eval': ((1, 1), (0.0, 1.0))}
DEFAULT_FAULTS = ('prepare:KILL', 'step:KILL', 'save:KILL', 'eval:TERM', 'step:INT',
                  'eval:KILL')
OVERRIDES = ('dataset_config=tiny', 'model=fanet_test_upernet', 'img_scale=(96,48)',
             'crop_size=(32,32)', 'batch_size=8', 'warmup_steps=2',
             'eval_every=4', 'eval_batch_size=8', 'checkpoint_every=2',
             'keep_checkpoints=2', 'log_every=1', 'worker_count=0',
             # Compiled in half the time (docs/performance.md, Test-suite compile settings).
             "model_kwargs={'conv_impl':'lax'}")


@dataclasses.dataclass(frozen=True)
class Fault:
  where: str
  signal: str
  k: int
  delay: float

  @property
  def spec(self) -> str:
    return f'{self.where}:{self.signal}:{self.k}:{self.delay:.4f}'

  @classmethod
  def parse(cls, spec: str) -> 'Fault':
    where, name, k, delay = spec.split(':')
    return cls(where, name, int(k), float(delay))


def plan(seed: int, faults: list[str]) -> list[Fault]:
  """Draws K and the delay of each WHERE:SIGNAL from the seed."""
  rng = random.Random(seed)
  drawn = []
  for item in faults:
    where, name = item.split(':')
    if where not in WHERES or name not in SIGNALS:
      raise SystemExit(f'unknown fault {item!r}: WHERE is one of {sorted(WHERES)}, '
                       f'SIGNAL one of {sorted(SIGNALS)}')
    (k_low, k_high), (d_low, d_high) = WHERES[where]
    drawn.append(Fault(where, name, rng.randint(k_low, k_high),
                       round(rng.uniform(d_low, d_high), 4)))
  return drawn


def random_faults(seed: int, count: int) -> list[str]:
  """`count` faults for the full campaign: data preparation first, then any mix."""
  rng = random.Random(seed + 1)
  kinds = [f'{w}:{s}' for w in WHERES if w != 'prepare' for s in SIGNALS]
  return ['prepare:KILL'] + [rng.choice(kinds) for _ in range(count - 1)]


# The child side: one launch.py run with one fault armed.


def _unfinished(workdir: str, data_dir: str) -> str:
  """What is half-done on disk right now, for the report."""
  found = []
  for folder in ('checkpoints', 'best'):
    path = os.path.join(workdir, folder)
    if os.path.isdir(path):
      found += [f'{folder}/{n}' for n in os.listdir(path) if 'orbax-checkpoint-tmp' in n]
  for parent, dirs, _ in os.walk(data_dir):
    found += [os.path.relpath(os.path.join(parent, d), data_dir)
              for d in dirs if d.startswith('incomplete')]
    dirs[:] = [d for d in dirs if not d.startswith('incomplete')]
  return ', '.join(sorted(found)) or 'nothing'


def _arm(fault: Fault, log_path: str, workdir: str, data_dir: str):
  """Patches the K-th occurrence of the fault's point to start the signal's timer."""
  from fanet_jax import checkpoints, progress
  from fanet_jax.tasks import segmentation
  from input_pipeline import synthetic_waste

  count = {'n': 0}

  def timer(what: str):
    def fire():
      time.sleep(fault.delay)
      with open(log_path, 'a') as f:
        f.write(f'{what}; +{fault.delay * 1000:.0f} ms: unfinished: '
                f'{_unfinished(workdir, data_dir)}\n')
        f.flush()
        os.fsync(f.fileno())
      os.kill(os.getpid(), SIGNALS[fault.signal])
    threading.Thread(target=fire, daemon=True).start()

  def note(what):
    if what:
      count['n'] += 1
      if count['n'] == fault.k:
        timer(what)

  def counted(original, describe, before=False):
    """`original` that notes its call (before it runs, or after, with its result)."""
    def wrapper(*args, **kwargs):
      if before:
        note(describe(args, None))
      result = original(*args, **kwargs)
      if not before:
        note(describe(args, result))
      return result
    return wrapper

  if fault.where == 'prepare':
    cls = synthetic_waste.SyntheticWaste
    cls.encode_example = counted(cls.encode_example,
                                 lambda a, r: f'example {count["n"] + 1} generated')
  elif fault.where == 'step':
    cls = progress.ProgressBar
    cls.update = counted(cls.update, lambda a, r: f'step {a[1]} done')
  elif fault.where == 'save':
    cls = checkpoints.Checkpointer
    cls.save = counted(cls.save, lambda a, r: r and f'save of step {a[1]} started')
  else:
    cls = segmentation.Segmentation
    cls.evaluate = counted(cls.evaluate, before=True,
                           describe=lambda a, r: f'evaluation {count["n"] + 1} started')


def child(argv: list[str]) -> int:
  spec, log_path, *launch_args = argv
  import launch
  args = launch.parse_args(launch_args)
  data_dir = next(a.split('=', 1)[1] for group in args.overrides for a in group
                  if a.startswith('data_dir='))
  _arm(Fault.parse(spec), log_path, args.workdir, data_dir)
  return launch.main(launch_args)


# The driver.


def _launch(args: list[str], env: dict, fault: Fault | None, log_path: str):
  if fault is None:
    command = [sys.executable, 'launch.py', '--no-report', *args]  # not compared
  else:
    command = [sys.executable, os.path.abspath(__file__), '--child', fault.spec,
               log_path, *args]
  done = subprocess.run(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT, text=True, timeout=900)
  return done.returncode, done.stdout


def _environment(root: str) -> dict:
  env = dict(os.environ)
  env.update({
      'JAX_PLATFORMS': 'cpu', 'XLA_FLAGS': '--xla_force_host_platform_device_count=1',
      # The launches share compiled programs; the optimisations off halve the compiles.
      'JAX_COMPILATION_CACHE_DIR': os.path.join(root, 'xla-cache'),
      'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0',
      'JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES': '0',
      'JAX_DISABLE_MOST_OPTIMIZATIONS': 'true', 'PYTHONUNBUFFERED': '1'})
  return env


def _command(root: str, name: str, num_steps: int) -> list[str]:
  # --no-report: the HTML report is not compared, and would cost each finished launch.
  return ['--no-report', '--experiment', 'demo',
          '--workdir', os.path.join(root, name, 'workdir'),
          '--set', f'data_dir={os.path.join(root, name, "tfds")}', *OVERRIDES,
          f'num_steps={num_steps}']


def run_length(faults: list[Fault]) -> int:
  """Steps enough for every fault to find the run unfinished: a launch trains at
  most 4 steps past its checkpoint before its fault fires; 12 at least, a multiple
  of the evaluation interval (4)."""
  return max(12, 4 * len(faults))


def _arrays(workdir: str, folder: str) -> tuple[int, dict]:
  """(step, path -> numpy array) of the newest state saved in `workdir/folder`."""
  import jax
  import numpy as np
  import orbax.checkpoint as ocp
  from fanet_jax import checkpoints
  directory = os.path.join(workdir, folder)
  step = checkpoints.saved_steps(directory)[-1]
  with ocp.StandardCheckpointer() as reader:
    tree = reader.restore(os.path.join(directory, str(step), 'state'))
  return step, {jax.tree_util.keystr(path): np.asarray(leaf)
                for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _metrics(workdir: str) -> list[dict]:
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [{k: v for k, v in json.loads(line).items() if k != 'time'} for line in f]


def compare(straight: str, interrupted: str) -> list[str]:
  """Prints each comparison; returns the differences found."""
  import numpy as np
  problems = []
  for folder in ('checkpoints', 'best'):
    (step_a, a), (step_b, b) = _arrays(straight, folder), _arrays(interrupted, folder)
    if step_a != step_b or a.keys() != b.keys():
      problems.append(f'{folder}: step {step_a} vs {step_b}, {len(a)} vs {len(b)} arrays')
      continue
    unequal = [k for k in a if not np.array_equal(a[k], b[k])]
    size = sum(x.size for x in a.values())
    print(f'  {folder}/{step_a}: {len(a)} arrays ({size} numbers) '
          + ('bitwise equal' if not unequal else f'{len(unequal)} differ'))
    for k in unequal:
      diff = np.max(np.abs(a[k].astype(np.float64) - b[k].astype(np.float64)))
      problems.append(f'{folder}/{step_a}{k}: max |difference| {diff:.3g}')
  lines_a, lines_b = _metrics(straight), _metrics(interrupted)
  same = lines_a == lines_b
  print(f'  metrics.jsonl: {len(lines_a)} vs {len(lines_b)} lines, '
        + ('equal (without time)' if same else 'DIFFERENT'))
  if not same:
    problems.append('metrics.jsonl differs: ' + next(
        (f'{x} vs {y}' for x, y in zip(lines_a, lines_b) if x != y),
        f'{len(lines_a)} vs {len(lines_b)} lines'))
  results = [json.load(open(os.path.join(w, 'results.json'))) for w in (straight, interrupted)]
  print(f'  results.json: test mIoU {results[0]["mIoU"]:.6f} vs {results[1]["mIoU"]:.6f}, '
        + ('equal' if results[0] == results[1] else 'DIFFERENT'))
  if results[0] != results[1]:
    problems.append('results.json differs')
  return problems


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--faults', default=None,
                      help='a count of random faults (default 12), or a comma-separated '
                      f'list of WHERE:SIGNAL (WHERE: {", ".join(WHERES)}; SIGNAL: '
                      f'{", ".join(SIGNALS)})')
  parser.add_argument('--root', default=None,
                      help='working folder (default: a new temporary one, deleted after)')
  args = parser.parse_args(argv)
  sys.stdout.reconfigure(line_buffering=True)  # each launch's line as it ends
  kinds = (random_faults(args.seed, int(args.faults or 12))
           if args.faults is None or args.faults.isdigit() else args.faults.split(','))
  faults = plan(args.seed, kinds)
  root = args.root or tempfile.mkdtemp(prefix='crash-consistency-')
  env = _environment(root)
  log_path = os.path.join(root, 'injected.log')

  started = time.time()
  num_steps = run_length(faults)
  code, out = _launch(_command(root, 'straight', num_steps), env, None, log_path)
  if code != 0:
    print(out[-3000:])
    raise SystemExit(f'the uninterrupted run failed with exit code {code}')
  print(f'straight run of {num_steps} steps: exit 0 ({time.time() - started:.0f} s)')
  print(f'interrupted run, seed {args.seed}:')
  print(f'  {"#":>2}  {"fault":<14} {"K":>2} {"delay":>7}  {"exit":>5}  '
        'resumed from  signal sent when')
  problems = []
  command = _command(root, 'interrupted', num_steps)
  for i, fault in enumerate(faults, 1):
    before = os.path.getsize(log_path) if os.path.exists(log_path) else 0
    code, out = _launch(command, env, fault, log_path)
    with open(log_path) if os.path.exists(log_path) else open(os.devnull) as f:
      f.seek(before)
      when = f.read().strip() or 'never (the launch ended first)'
    resumed = re.search(r'Resuming from the checkpoint at step (\d+)', out)
    print(f'  {i:>2}  {fault.where + ":" + fault.signal:<14} {fault.k:>2} '
          f'{fault.delay * 1000:>5.0f}ms  {code:>5}  '
          f'{resumed.group(1) if resumed else "-":>12}  {when}')
    if code != EXPECTED_EXIT[fault.signal]:
      problems.append(f'launch {i} ({fault.spec}) exited {code}, expected '
                      f'{EXPECTED_EXIT[fault.signal]}:\n{out[-2000:]}')
  code, out = _launch(command, env, None, log_path)
  resumed = re.search(r'Resuming from the checkpoint at step (\d+)', out)
  print(f'  last launch, no fault: exit {code}, resumed from step '
        f'{resumed.group(1) if resumed else "-"}')
  if code != 0:
    problems.append(f'the last launch exited {code}:\n{out[-3000:]}')
  else:
    print('compared with the straight run:')
    problems += compare(os.path.join(root, 'straight', 'workdir'),
                        os.path.join(root, 'interrupted', 'workdir'))
  print(f'{len(faults)} faults, {time.time() - started:.0f} s in all')
  if args.root is None:
    shutil.rmtree(root, ignore_errors=True)
  if problems:
    print('FAILED:\n' + '\n'.join(problems))
    return 1
  print('OK: the interrupted run ended with the same bits as the straight run')
  return 0


if __name__ == '__main__':
  if sys.argv[1:2] == ['--child']:
    sys.exit(child(sys.argv[2:]))
  sys.exit(main())
