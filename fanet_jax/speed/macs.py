"""Exact multiply-add counts of a jax program, from its jaxpr.

Counts what the program's convolutions and matmuls compute, shape by shape: a conv
output element costs (rhs input features) x (kernel taps) multiply-adds, a
`dot_general` output element the product of its contracting sizes. Everything else
(elementwise ops, reductions, transforms) counts nothing. Sub-programs (jit, custom
VJP, remat, scan bodies times their length, cond's most expensive branch) are
followed. Run on the plain formulation (`conv_impl='lax'`) this gives the
architecture's multiply-adds; the benchmark divides it by the time of the fast
formulation, which computes fewer (Winograd), to give an "effective" rate.

Multiply-adds inside `jax.image.resize` (bilinear resizing is written as matmuls with
interpolation weights) and the adaptive pooling matrices are reported apart
(`interpolation`), since the published counts (docs/models.md section 6) leave them out.
"""
from typing import Any, Callable

import jax
import numpy as np
from jax.extend import core as jax_core  # `import jax` alone does not load jax.extend

# jit names whose matmuls are interpolation weights, not learned layers.
_INTERPOLATION_NAMES = ('_resize', 'resize', '_scale_and_translate', 'scale_and_translate',
                        'adaptive_avg_pool')


def _conv_macs(eqn) -> int:
  rhs = eqn.invars[1].aval.shape
  spec = eqn.params['dimension_numbers'].rhs_spec  # (out feature, in feature, spatial...)
  taps = int(np.prod([rhs[d] for d in spec[2:]]))
  return int(np.prod(eqn.outvars[0].aval.shape)) * rhs[spec[1]] * taps


def _dot_macs(eqn) -> int:
  (contracting, _), _ = eqn.params['dimension_numbers']
  lhs = eqn.invars[0].aval.shape
  return int(np.prod(eqn.outvars[0].aval.shape)) * int(np.prod([lhs[d] for d in contracting]))


def _sub_jaxprs(params: dict) -> list:
  out = []
  for value in params.values():
    for v in (value if isinstance(value, (tuple, list)) else (value,)):
      if isinstance(v, jax_core.ClosedJaxpr):
        out.append(v.jaxpr)
      elif isinstance(v, jax_core.Jaxpr):
        out.append(v)
  return out


def _count(jaxpr, counts: dict, interpolation: bool) -> None:
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    key = 'interpolation' if interpolation else 'layers'
    if name == 'conv_general_dilated':
      counts[key] += _conv_macs(eqn)
    elif name == 'dot_general':
      counts[key] += _dot_macs(eqn)
    subs = _sub_jaxprs(eqn.params)
    if not subs:
      continue
    inner = interpolation or str(eqn.params.get('name', '')) in _INTERPOLATION_NAMES
    if name == 'cond':  # one branch runs: count the most expensive
      branch_counts = []
      for sub in subs:
        c = {'layers': 0, 'interpolation': 0}
        _count(sub, c, inner)
        branch_counts.append(c)
      best = max(branch_counts, key=lambda c: c['layers'] + c['interpolation'])
      for k in counts:
        counts[k] += best[k]
      continue
    times = int(eqn.params.get('length', 1)) if name == 'scan' else 1
    for sub in subs:
      c = {'layers': 0, 'interpolation': 0}
      _count(sub, c, inner)
      for k in counts:
        counts[k] += times * c[k]


def count_macs(fn: Callable, *args: Any) -> dict:
  """Multiply-adds of `fn(*args)` (traced, not run).

  Args:
    fn: a jax-traceable function.
    *args: its arguments (arrays or ShapeDtypeStructs).

  Returns:
    {'layers': convolution and matmul multiply-adds outside resizing/pooling,
     'interpolation': those of bilinear resizes and adaptive pooling}.
  """
  closed = jax.make_jaxpr(fn)(*args)
  counts = {'layers': 0, 'interpolation': 0}
  _count(closed.jaxpr, counts, False)
  return counts
