"""A run killed at a seeded moment, and stopped by Ctrl-C, resumed each time with the
same command, ends with the same bits as a run that was never interrupted.

The suite's version of scripts/crash_consistency.py (which has the details), with
two faults: a SIGKILL during an asynchronous save, and a real SIGINT (Ctrl-C) during
an evaluation, which the run must answer by saving after it and exiting 130. A real
SIGTERM mid-step is tests/test_imagenet_training.py's (sent to one of two processes),
a SIGKILL during data preparation tests/test_data_faults.py's; the full campaign,
every fault at every kind of moment, is `python scripts/crash_consistency.py`.
"""
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAULTS = 'save:KILL,eval:INT'


def test_killed_and_stopped_runs_end_bitwise_equal_to_a_straight_run(tmp_path):
  done = subprocess.run(
      [sys.executable, 'scripts/crash_consistency.py', '--seed', '0', '--faults', FAULTS,
       '--root', str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=900)
  report = done.stdout + done.stderr
  assert done.returncode == 0, report[-5000:]
  assert 'never (the launch ended first)' not in report  # every fault was injected
  for line in ('checkpoints/12: 614 arrays', 'best/12: 614 arrays',
               'metrics.jsonl: 16 vs 16 lines, equal', 'OK: the interrupted run ended'):
    assert line in report, report
