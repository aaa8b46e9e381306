"""GPU-readiness facts of the training step, read from its HLO (docs/performance.md).

No GPU is needed: the step is lowered and compiled here and its HLO is inspected.

- Host round trips: the step must not contain infeed / outfeed / send / recv or a
  host callback (`jax.debug.print`, `pure_callback`, `io_callback` lower to a
  custom-call whose target names a callback); then one call is one device program.
- Mixed precision: with `dtype=bfloat16` every convolution and matmul the model gives
  XLA (the lowered, pre-optimisation HLO, which is what a GPU compile starts from)
  has bf16 operands, while parameters, optimiser state and the loss stay float32.
  XLA:CPU itself may widen bf16 ops to float32 when compiling; the compiled CPU HLO
  is reported too, for what it is.
- Donation: the state's buffers are aliased to the new state's in the compiled
  program (`input_output_alias`), so a step allocates no second copy of the
  parameters and Adam moments.
"""
import collections
import functools
import re
from typing import Any

_HOST_OPS = ('infeed', 'outfeed', 'send', 'send-done', 'recv', 'recv-done')
# An HLO instruction: `%name = type opcode(...)` (types may be tuples).
_INSTRUCTION = re.compile(r'^\s*(?:ROOT\s+)?%?[\w.\-]+ = (\([^=]*?\)|\S+) ([\w\-]+)\(')
_OPERAND_TYPES = re.compile(r'(bf16|f16|f32|f64|s32|u8|s8|pred)\[')


def analyze(hlo_text: str) -> dict:
  """Counts the facts above in one HLO module's text.

  Args:
    hlo_text: `lowered.as_text(dialect='hlo')` or `compiled.as_text()`.

  Returns:
    {'host_transfers': count of infeed/outfeed/send/recv ops,
     'host_callbacks': custom-calls whose target names a callback or the host,
     'convolutions' / 'dots': {operand element types: count},
     'aliased_outputs': entries of input_output_alias}.
  """
  host_transfers = host_callbacks = 0
  convs, dots = collections.Counter(), collections.Counter()
  for line in hlo_text.splitlines():
    m = _INSTRUCTION.match(line)
    if not m:
      continue
    shape, opcode = m.groups()
    if opcode in _HOST_OPS:
      host_transfers += 1
    elif opcode == 'custom-call':
      target = re.search(r'custom_call_target="([^"]*)"', line)
      if target and re.search(r'callback|host', target.group(1), re.I):
        host_callbacks += 1
    elif opcode in ('convolution', 'dot'):
      types = _OPERAND_TYPES.findall(line[m.end():]) or _OPERAND_TYPES.findall(shape)
      counter = convs if opcode == 'convolution' else dots
      counter['/'.join(sorted(set(types)))] += 1
  header = next((l for l in hlo_text.splitlines() if l.startswith('HloModule')), '')
  alias = re.search(r'input_output_alias=\{(.*?) \}', header)
  aliased = len(re.findall(r'\{[\d, ]*\}: \(', alias.group(1))) if alias else 0
  return {'host_transfers': host_transfers, 'host_callbacks': host_callbacks,
          'convolutions': dict(convs), 'dots': dict(dots), 'aliased_outputs': aliased}


def train_step_report(model_name: str = 'fanet_tiny_upernet', *, dtype: Any = 'bfloat16',
                      conv_impl: str = 'lax', batch: int = 2,
                      size: tuple[int, int] = (512, 512), compile_cpu: bool = True) -> dict:
  """Lowers (and compiles) the segmentor's training step and analyses its HLO.

  Args:
    model_name: a segmentor of `models.create`.
    dtype: computation dtype ('bfloat16' for the GPU configuration).
    conv_impl: 'lax' (XLA convolutions: what a GPU runs) or 'fast' (XLA:CPU's).
    batch: batch size.
    size: (H, W) of the images.
    compile_cpu: also compile for this CPU and analyse the compiled HLO.

  Returns:
    {'lowered': analyze(...) of the compiler input, 'compiled': the same of the CPU
     executable (if compiled), 'state_buffers': leaves of the donated state,
     'param_dtypes': element types of the parameters, 'loss_dtype': ...}.
  """
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  from fanet_jax import models  # pylint: disable=import-outside-toplevel
  from fanet_jax import train_step as train_step_lib  # pylint: disable=import-outside-toplevel
  from fanet_jax.speed import cases  # pylint: disable=import-outside-toplevel

  model = models.create(model_name, dtype=jnp.dtype(dtype), conv_impl=conv_impl)
  step, tx = cases.jitted_train_step(model)
  state = jax.eval_shape(functools.partial(
      train_step_lib.init_state, model, tx, image_shape=(1, *size, 3)), jax.random.key(0))
  batch_shapes = {'image': jax.ShapeDtypeStruct((batch, *size, 3), jnp.float32),
                  'label': jax.ShapeDtypeStruct((batch, *size), jnp.int32)}
  lowered = step.lower(state, batch_shapes, jax.random.key(2))
  out_shapes = jax.eval_shape(step, state, batch_shapes, jax.random.key(2))
  report = {
      'model': model_name, 'dtype': str(jnp.dtype(dtype)), 'conv_impl': conv_impl,
      'lowered': analyze(lowered.as_text(dialect='hlo')),
      'state_buffers': len(jax.tree.leaves(state)),
      'param_dtypes': sorted({str(p.dtype) for p in jax.tree.leaves(state.params)}),
      'loss_dtype': str(out_shapes[1]['loss'].dtype),
  }
  if compile_cpu:
    report['compiled'] = analyze(lowered.compile().as_text())
  return report


def main_report() -> dict:
  """What `python -m fanet_jax.speed.benchmark --hlo-report` prints: FANet-tiny + UperNet +
  FCN at 512x512 batch 2, bf16 with XLA convolutions (the GPU setting), lowered and
  compiled for this CPU."""
  return train_step_report()
