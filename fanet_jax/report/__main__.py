"""`python -m fanet_jax.report WORKDIR [WORKDIR ...]`: the options, and the one line
(exit 2) of an input that cannot be reported on. What the page shows: the package's
docstring (fanet_jax/report/__init__.py).
"""
import argparse
import sys

from fanet_jax import report, trained


def parse_args(argv):
  parser = argparse.ArgumentParser(
      prog='python -m fanet_jax.report', description=report.__doc__.split('\n\n')[0],
      epilog=report.__doc__.split('\n\n', 1)[1],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('workdirs', nargs='+', metavar='WORKDIR', help='training runs')
  parser.add_argument('--split', default='test', choices=('train', 'val', 'test'),
                      help='the split scored and shown (default: test)')
  parser.add_argument('--output', default=None, metavar='DIR',
                      help="where index.html goes (default: the first workdir's report/)")
  parser.add_argument('--images', type=int, default=6, metavar='N',
                      help='examples shown (default: 6)')
  parser.add_argument('--seed', type=int, default=0, help='of the random examples')
  parser.add_argument('--no-internals', dest='internals', action='store_false',
                      help='leave out section 4, the maps inside the model (FANet, '
                      'DenseAttentionSeg) of the worst and the best example')
  args = parser.parse_args(argv)
  if args.images < 0:
    parser.error(f'--images must be at least 0, got {args.images}')
  return args


def main(argv=None) -> int:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  from fanet_jax.report.page import make_report
  code, path = trained.run_command(lambda: make_report(args))
  if not code:
    print(f'report: {path}')
  return code


if __name__ == '__main__':
  from fanet_jax.runtime import configure_process
  configure_process()  # launch.py's XLA:CPU flags and malloc settings
  sys.exit(main())
