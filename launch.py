"""Entry point: `python launch.py [--experiment NAME] [--workdir DIR] [--set key=value ...]`.

Several processes (hosts, or GPUs) run the same command; under SLURM's `srun` they
find each other on their own, elsewhere add `--coordinator_address HOST:PORT
--num_processes N --process_id I` (docs/training.md section 5).

Loads `experiments/<NAME>.py:get_config()` (default: `demo`), applies the overrides
(unknown keys fail with the list of valid ones) and calls
`fanet_jax.trainer.train_and_evaluate`, which locks the workdir, writes the resolved
config into it and, when resuming, first checks it against the config the run
started with (fanet_jax/workdir.py). Running the same command again resumes from the
workdir's newest readable checkpoint.
"""
import argparse
import errno
import os
import sys


def parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--experiment', default='demo',
                      help='name of a file in experiments/ (default: demo)')
  parser.add_argument('--workdir', default=None,
                      help='checkpoints and logs go here (default: workdirs/<experiment>)')
  parser.add_argument('--set', dest='overrides', action='append', nargs='+', default=[],
                      metavar='KEY=VALUE', help='override config fields, e.g. '
                      '--set num_steps=100 crop_size=(64,64)')
  parser.add_argument('--no-report', dest='report', action='store_false',
                      help='segmentation runs: do not write the HTML report '
                      '(WORKDIR/report/index.html) at the end')
  parser.add_argument('--coordinator_address', default=None,
                      help='multi-process runs: host:port of process 0')
  parser.add_argument('--num_processes', type=int, default=None,
                      help='multi-process runs: number of processes')
  parser.add_argument('--process_id', type=int, default=None,
                      help='multi-process runs: index of this process')
  return parser.parse_args(argv)


def main(argv=None) -> int:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  # Imported after argument parsing so that `--help` answers at once.
  from absl import flags

  from fanet_jax import config as config_lib
  from input_pipeline.errors import DataError

  flags.FLAGS.mark_as_parsed()  # grain's worker processes read absl flags.
  workdir = args.workdir or os.path.join('workdirs', args.experiment)
  try:
    config = config_lib.load_experiment(args.experiment)
    config = config_lib.apply_overrides(
        config, [item for group in args.overrides for item in group])
  except config_lib.ConfigError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2

  import jax

  from fanet_jax import distributed, trainer
  from fanet_jax.checkpoints import CheckpointError
  from fanet_jax.workdir import WorkdirBusyError
  from fanet_jax.runtime import allocator, xla_cpu
  from fanet_jax.nonfinite import NonFiniteError
  from fanet_jax.pretrained import PretrainedError
  from fanet_jax.stopping import Stopped

  xla_cpu.configure()  # before JAX starts its backend (xla_cpu.py)
  try:
    distributed.initialize(args.coordinator_address, args.num_processes,
                           args.process_id)
  except ValueError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  if jax.default_backend() == 'cpu':
    allocator.configure()  # no page faults on the step's buffers (allocator.py)
  try:
    trainer.train_and_evaluate(config, workdir)
  except (config_lib.ConfigError, DataError, PretrainedError, WorkdirBusyError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  except (NonFiniteError, CheckpointError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  except Stopped as e:  # 75 after SIGTERM (a scheduler may requeue), 130 after Ctrl-C
    print(e, file=sys.stderr)
    return e.exit_code
  except OSError as e:  # a log or data file; checkpoints: CheckpointError above
    if e.errno not in (errno.ENOSPC, errno.EDQUOT):
      raise
    print(f'error: writing {e.filename or "a file of the run"} failed ({e.strerror}); '
          'make room, then run the same command again to resume', file=sys.stderr)
    return 1
  except KeyboardInterrupt:  # outside the training loop: preparing data, compiling
    print('Interrupted before training started or after it ended; the checkpoints '
          'in the workdir are as they were. Run the same command again to go on.',
          file=sys.stderr)
    return 130
  if args.report and config.task == 'segmentation' and jax.process_index() == 0:
    write_report(workdir)
  return 0


def write_report(workdir: str) -> None:
  """The run's HTML report (python -m fanet_jax.report), its path printed; written
  once after the run's results, and a report that cannot be written is a warning:
  the run itself is done."""
  from fanet_jax.report import __main__ as report
  page = os.path.join(workdir, 'report', 'index.html')
  results = os.path.join(workdir, 'results.json')
  if (os.path.exists(page) and os.path.exists(results)
      and os.path.getmtime(page) > os.path.getmtime(results)):
    print(f'report: {page}')  # written when the run finished
    return
  if report.main([workdir]):
    print(f'warning: the report of {workdir} was not written (above); the run is '
          'complete. Try again: python -m fanet_jax.report ' + workdir, file=sys.stderr)


if __name__ == '__main__':
  sys.exit(main())
