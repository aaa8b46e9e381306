"""allocator.configure: freed large blocks are reused, not page-faulted in again."""
import platform
import subprocess
import sys

import pytest

# Allocates and frees a 256 MB block (touching it) three times; prints the minor page
# faults of the last two rounds. With glibc's defaults each round mmaps a fresh block
# (65536 faults of 4 KB pages); configured, the heap keeps the block.
_PROGRAM = """
import ctypes, resource, sys
from fanet_jax.runtime import allocator
applied = allocator.configure() if sys.argv[1] == 'on' else None
libc = ctypes.CDLL('libc.so.6')
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
size = 256 * 2**20
def touch_round():
  p = libc.malloc(size)
  ctypes.memset(p, 1, size)
  libc.free(p)
touch_round()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
touch_round(); touch_round()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> tuple[str, int]:
  out = subprocess.run([sys.executable, '-c', _PROGRAM, mode], capture_output=True,
                       text=True, check=True).stdout.split()
  return out[0], int(out[1])


def test_configure_stops_refaulting_freed_blocks():
  if platform.libc_ver()[0] != 'glibc':
    pytest.skip('the settings are glibc malloc\'s; this C library is not glibc')
  applied, faults_on = _faults('on')
  _, faults_off = _faults('off')
  assert applied == 'True'
  assert faults_off >= 2 * 65536 * 0.9  # every round faults its 256 MB in again
  assert faults_on < 1000
