"""Winograd minimal filtering F(m x m, 3 x 3) for dense 3x3 stride-1 convolutions.

Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (CVPR 2016). Every
(m + 2) x (m + 2) input tile d and the 3 x 3 kernel g give an m x m output tile

    Y = A^T [(G g G^T) * (B^T d B)] A,

so the convolution becomes an input transform, one batched matmul over the
(m + 2)^2 tile positions and an output transform. F(4x4, 3x3) needs 36 instead of
144 multiply-adds per 16 outputs and channel pair (4x fewer), and matmuls run faster
on XLA:CPU than its direct convolutions (docs/performance.md, Winograd for 3x3
convs). The backward pass is written
out (custom VJP) as Winograd too: the input gradient is the same convolution of the
output gradient with the flipped, transposed kernel, and the kernel gradient is one
batched matmul of the saved transformed input with the transformed output gradient.

The transforms are sums of strided slices with constant coefficients, built so that
XLA makes one loop fusion per pass (rows, then columns) without recomputing the first
pass inside the second. The numbers equal the direct convolution's up to float32
round-off: the F(4x4) coefficients reach 8, so errors are about ten times those of a
direct sum (relative 1e-5; checked in tests/test_conv_formulation.py).
"""
import functools

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

# (B^T, G, A^T) for F(m, 3), interpolation points 0, +-1, (+-2,) infinity.
_MATRICES = {
    2: (np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]),
        np.array([[1, 0, 0], [1 / 2, 1 / 2, 1 / 2], [1 / 2, -1 / 2, 1 / 2], [0, 0, 1]]),
        np.array([[1, 1, 1, 0], [0, 1, -1, -1]])),
    4: (np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                  [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]),
        np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                  [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]]),
        np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
                  [0, 1, -1, 8, -8, 1]])),
}


def _combine(coefficients: np.ndarray, terms: list) -> jax.Array:
  """sum_i coefficients[i] * terms[i], skipping zeros and multiplies by +-1."""
  out = None
  for c, t in zip(coefficients, terms):
    if c == 0:
      continue
    t = t if c == 1 else (-t if c == -1 else t * np.asarray(c, t.dtype))
    out = t if out is None else (out + t)
  return out


def _transform(matrix: np.ndarray, terms: list) -> jax.Array:
  """stack_u(sum_i matrix[u, i] * terms[i]): shape (len(matrix), *terms[0].shape)."""
  return jnp.stack([_combine(row, terms) for row in matrix])


def _tiles(x: jax.Array, size: int, step: int, n: tuple[int, int]) -> list:
  """Per offset (i, j) in size x size, x[:, i::step, j::step] cut to n tiles: 2-D list."""
  nh, nw = n
  rows = [lax.slice_in_dim(x, i, i + step * (nh - 1) + 1, step, axis=1)
          for i in range(size)]
  return [[lax.slice_in_dim(r, j, j + step * (nw - 1) + 1, step, axis=2)
           for j in range(size)] for r in rows]


def _input_transform(x: jax.Array, m: int) -> jax.Array:
  """B^T d B of every overlapping (m + 2)^2 tile of x padded by 1: (a*a, tiles, C)."""
  bt = _MATRICES[m][0]
  a = m + 2
  b, h, w, c = x.shape
  nh, nw = -(-h // m), -(-w // m)
  xp = jnp.pad(x, ((0, 0), (1, 1 + nh * m - h), (1, 1 + nw * m - w), (0, 0)))
  # Rows first (a sums of a strided row slices each), then columns of the result.
  rows = [lax.slice_in_dim(xp, i, i + m * (nh - 1) + 1, m, axis=1) for i in range(a)]
  t = _transform(bt, rows)  # (a_row, B, nh, Wp, C)
  cols = [lax.slice_in_dim(t, j, j + m * (nw - 1) + 1, m, axis=3) for j in range(a)]
  v = _transform(bt, cols)  # (a_col, a_row, B, nh, nw, C)
  return v.reshape(a * a, b * nh * nw, c)


def _kernel_transform(kernel: jax.Array, m: int) -> jax.Array:
  """G g G^T in float32, laid out like the input transform: (a*a, C, O)."""
  g = _MATRICES[m][1]
  a = m + 2
  k = kernel.astype(jnp.float32)
  u = _transform(g, [k[i] for i in range(3)])  # (a_row, 3, C, O)
  u = _transform(g, [u[:, j] for j in range(3)])  # (a_col, a_row, C, O)
  return u.reshape(a * a, *kernel.shape[2:])


def _kernel_transform_transpose(du: jax.Array, m: int) -> jax.Array:
  """Adjoint of `_kernel_transform`: (a*a, C, O) -> (3, 3, C, O)."""
  g = _MATRICES[m][1]
  a = m + 2
  du = du.reshape(a, a, *du.shape[1:])  # (a_col, a_row, C, O)
  t = _transform(g.T, [du[v] for v in range(a)])  # (3_col, a_row, C, O)
  k = _transform(g.T, [t[:, u] for u in range(a)])  # (3_row, 3_col, C, O)
  return k


def _output_transform(prod: jax.Array, shape: tuple, m: int) -> jax.Array:
  """A^T M A of every tile, tiles put back into (B, H, W, O)."""
  at = _MATRICES[m][2]
  a = m + 2
  b, h, w = shape
  nh, nw = -(-h // m), -(-w // m)
  o = prod.shape[-1]
  prod = prod.reshape(a, a, b, nh, nw, o)  # (a_col, a_row, ...)
  y = _transform(at, [prod[:, i] for i in range(a)])  # (m_row, a_col, ...)
  y = _transform(at, [y[:, j] for j in range(a)])  # (m_col, m_row, B, nh, nw, O)
  y = y.transpose(2, 3, 1, 4, 0, 5).reshape(b, nh * m, nw * m, o)
  return y[:, :h, :w]


def _output_transform_transpose(dy: jax.Array, m: int) -> jax.Array:
  """Adjoint of `_output_transform`: (B, H, W, O) -> (a*a, tiles, O)."""
  at = _MATRICES[m][2]
  a = m + 2
  b, h, w, o = dy.shape
  nh, nw = -(-h // m), -(-w // m)
  dy = jnp.pad(dy, ((0, 0), (0, nh * m - h), (0, nw * m - w), (0, 0)))
  rows = [lax.slice_in_dim(dy, r, r + m * (nh - 1) + 1, m, axis=1) for r in range(m)]
  t = _transform(at.T, rows)  # (a_row, B, nh, Wm, O)
  cols = [lax.slice_in_dim(t, s, s + m * (nw - 1) + 1, m, axis=3) for s in range(m)]
  dm = _transform(at.T, cols)  # (a_col, a_row, B, nh, nw, O)
  return dm.reshape(a * a, b * nh * nw, o)


def _forward(x, kernel, m):
  v = _input_transform(x, m)
  u = _kernel_transform(kernel, m).astype(x.dtype)
  prod = jnp.einsum('ptc,pco->pto', v, u, preferred_element_type=x.dtype)
  return _output_transform(prod, x.shape[:3], m), v


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv3x3(x, kernel, m):
  return _forward(x, kernel, m)[0]


def _conv3x3_fwd(x, kernel, m):
  y, v = _forward(x, kernel, m)
  return y, (v, kernel)


def _conv3x3_bwd(m, residuals, dy):
  v, kernel = residuals
  # Kernel gradient: one batched matmul of the saved transformed input with the
  # transformed output gradient, taken back through the kernel transform.
  dm = _output_transform_transpose(dy, m)
  du = jnp.einsum('ptc,pto->pco', v, dm, preferred_element_type=jnp.float32)
  dkernel = _kernel_transform_transpose(du, m).astype(kernel.dtype)
  # Input gradient: the convolution of dy with the kernel flipped in space and
  # transposed in channels (stride 1, padding 1 is its own adjoint).
  dx = _conv3x3(dy, jnp.flip(kernel, (0, 1)).swapaxes(2, 3), m)
  return dx, dkernel


_conv3x3.defvjp(_conv3x3_fwd, _conv3x3_bwd)


def conv3x3(x: jax.Array, kernel: jax.Array, tile: int = 4) -> jax.Array:
  """3x3 convolution, stride 1, padding 1, NHWC x HWIO, by Winograd F(tile, 3).

  Args:
    x: (B, H, W, C) input.
    kernel: (3, 3, C, O) kernel.
    tile: output tile size m: 2 or 4.

  Returns:
    (B, H, W, O), equal to `lax.conv_general_dilated(x, kernel, (1, 1),
    ((1, 1), (1, 1)), dimension_numbers=('NHWC', 'HWIO', 'NHWC'))` up to round-off;
    differentiable in both arguments.
  """
  if tile not in _MATRICES:
    raise ValueError(f'Winograd tile must be one of {sorted(_MATRICES)}, got {tile}')
  if kernel.shape[:2] != (3, 3) or kernel.shape[2] != x.shape[-1]:
    raise ValueError(f'kernel {kernel.shape} is not (3, 3, {x.shape[-1]}, O)')
  return _conv3x3(x, kernel, tile)
