"""glibc malloc settings that stop a CPU training step from page-faulting its buffers.

XLA:CPU allocates an executable's temporary buffer (gigabytes for the FANet-tiny
segmentor's train step) with malloc on every call. glibc serves blocks that large with
a fresh `mmap` and returns them with `munmap`, so every step first-touches
(page-faults and zeroes) all of it again, seconds of kernel time per step on a small
machine (docs/performance.md, glibc malloc settings). `configure()` keeps freed memory in the process: one
arena (threads' arenas would still `mmap` large blocks), no `mmap` for large blocks
and no trimming of the heap's top. The resident set stays at the step's peak between
steps instead of dropping and growing back; the peak itself does not grow.

The same settings, as environment variables for a process that cannot call this
before it allocates (e.g. the PyTorch reference in the benchmark):
`MALLOC_ARENA_MAX=1 MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=<huge>` (`ENVIRONMENT`).
"""
import ctypes
import ctypes.util

# mallopt parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
# The environment-variable form of configure()'s settings.
ENVIRONMENT = {'MALLOC_ARENA_MAX': '1', 'MALLOC_MMAP_MAX_': '0',
               'MALLOC_TRIM_THRESHOLD_': str(2**62)}


def _glibc():
  """The C library if it is glibc (it has mallopt and malloc_trim), else None."""
  try:
    libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
    libc.mallopt.argtypes, libc.mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    libc.malloc_trim.argtypes, libc.malloc_trim.restype = (ctypes.c_size_t,), ctypes.c_int
  except (OSError, AttributeError):
    return None
  return libc


def configure() -> bool:
  """Applies the settings to this process's glibc malloc.

  Call early (before large arrays exist); harmless to call twice.

  Returns:
    True if applied; False where the C library is not glibc (nothing changes).
  """
  libc = _glibc()
  if libc is None:
    return False
  # A threshold of -1 reads as SIZE_MAX in glibc: the heap's top is never trimmed.
  return all(libc.mallopt(param, value) == 1 for param, value in
             ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1)))


def release_free_memory() -> None:
  """Hands the heap's free pages back to the OS (glibc `malloc_trim`), also under
  `configure()`'s settings.

  The benchmark calls it on both sides before timing, so that the peak resident
  memory measured next is what the timed program needs, not what the compiler or
  model construction freed but the allocator kept. Not glibc: nothing to hand back.
  """
  libc = _glibc()
  if libc is not None:
    libc.malloc_trim(0)
