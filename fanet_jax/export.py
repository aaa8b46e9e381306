"""Exports a trained segmentor as an ONNX or a StableHLO file, with a JSON sidecar.

  python -m fanet_jax.export --workdir workdirs/demo --format onnx --size 96 96
  python -m fanet_jax.export --workdir workdirs/demo --format stablehlo --size 96 96
  python -m fanet_jax.export --workdir workdirs/demo_depth --format onnx --size 96 128 \\
      --output-kind classes --output hands.onnx
  python -m fanet_jax.export --experiment zerowaste_fanet_tiny --weights converted/ \\
      --format onnx --size 512 512

The model is the run's (`WORKDIR/config.json`) with the variables of its best
checkpoint (default), its newest one (`latest`) or a step; or, with `--experiment`
and `--weights`, an experiment's model (`--set key=value` as in launch.py) with a
variables checkpoint of `python -m fanet_jax.pytorch.convert`.

What the exported graph takes: `images`, float32 (batch, H, W, C), NHWC, already
normalised as the run's test pipeline does it: RGB (C=3) as (pixel - mean) / std
with the config's `mean` / `std` (0-255 scale, RGB order); depth (C=1) as
clip((d - lo) / (hi - lo), 0, 1) for depth d in mm with (lo, hi) the config's
`depth_range_mm`, and -1 where the depth is missing (0). The batch dimension is
dynamic; H and W are fixed by `--size` (a multiple of the run's `size_divisor` for
RGB runs, whose test pipeline resizes images up to one; of 16, the depth encoder's
output stride, for depth runs). What it returns: `logits`, float32 (batch, H, W,
num_classes), or with `--output-kind classes` their arg-max, int32 (batch, H, W).
The sidecar `FILE.json` (and, for ONNX, the file's metadata_props) holds all of
this: class names, mean / std or the depth range, img_scale, size_divisor, the input
size and the differences measured at export.

Route to ONNX: jax2onnx converting the model's jaxpr, traced with a symbolic batch.
Unlike going through the PyTorch reference (FANet only), it covers every segmentor of
the factory, and it converts the computation JAX runs, so the numbers agree to
float32 round-off (docs/deployment.md). The jaxpr is first flattened (jit, remat and
custom-derivative calls inlined), its max pools written as maxima of shifted slices
(jax2onnx's MaxPool pools the batch and channel axes too, which onnxruntime rejects)
and the parts that depend on the variables alone (BatchNorm scales, resize weights)
folded into constants. FANet models are exported in the `lax` conv formulation and
DenseAttentionSeg with `lax` transposed convs: the same parameters and numbers as the
XLA:CPU formulations, as ONNX Conv (group=...) and ConvTranspose nodes. Both formats
are checked at export time: ONNX in onnxruntime, StableHLO deserialised and called
through JAX, on three batches (seeded random normal, zeros, a synthetic frame)
against the JAX model; a difference above 1e-4 (or, for classes, a differing class
where the two top logits are further apart than 1e-4) fails (exit 1) and the file is
kept as FILE.unverified. The StableHLO file embeds the variables and needs no model
code to run: `jax.export.deserialize(bytearray(open(FILE, 'rb').read())).call(images)`.
"""
import argparse
import dataclasses
import itertools
import json
import os
import sys
import time

from fanet_jax import trained

TOLERANCE = 1e-4
DEPTH_SIZE_MULTIPLE = 16  # the depth encoders' output stride
FOLD_MAX_ELEMENTS = 1 << 16  # larger results of variables alone stay computed


# The packages each format needs beyond requirements.txt (docs/deployment.md).
PACKAGES = {'onnx': ('onnx', 'onnxruntime', 'jax2onnx'), 'stablehlo': ('flatbuffers',)}


class ExportError(ValueError):
  """A source, option or missing package that stops an export: one line, exit 2."""


def check_packages(file_format: str) -> None:
  """Raises ExportError naming the packages `file_format` needs that are missing."""
  import importlib.util
  missing = [p for p in PACKAGES[file_format] if importlib.util.find_spec(p) is None]
  if missing:
    raise ExportError(f'--format {file_format} needs {", ".join(missing)}: pip install '
                      '-r requirements-export.txt, then pip install --no-deps '
                      'jax2onnx==0.17.1 (docs/deployment.md)')


def parse_args(argv):
  parser = argparse.ArgumentParser(
      description=__doc__.split('\n\n')[0], epilog=__doc__.split('\n\n', 1)[1],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  trained.add_arguments(parser)
  parser.add_argument('--format', choices=('onnx', 'stablehlo'), required=True)
  parser.add_argument('--size', type=int, nargs=2, metavar=('H', 'W'), required=True,
                      help='the input height and width the graph is fixed to')
  parser.add_argument('--output', help='default: WORKDIR/export/model-HxW.onnx '
                      '(.stablehlo); with --experiment, in the current folder')
  parser.add_argument('--output-kind', dest='output_kind', default='logits',
                      choices=('logits', 'classes'),
                      help='logits (default) or their arg-max, the class map')
  return parser.parse_args(argv)


def check_size(config, size) -> None:
  """Refuses a size the run's model is not meant to see (ExportError)."""
  if config.modality == 'depth':
    multiple, why = DEPTH_SIZE_MULTIPLE, "the depth encoder's output stride"
  else:
    multiple, why = config.size_divisor, ("the run's size_divisor: its test pipeline "
                                          'resizes images up to a multiple of it')
  if min(size) < multiple or any(s % multiple for s in size):
    raise ExportError(f'--size {size[0]} {size[1]}: height and width must be positive '
                      f'multiples of {multiple} ({why})')


def export_config(config, onnx: bool):
  """The config exported: float32 compute; for ONNX the plain conv formulations
  (same parameters and numbers; grouped convs become Conv group=..., the transposed
  convs ConvTranspose)."""
  kwargs = dict(config.model_kwargs)
  if onnx and config.model.startswith('fanet'):
    kwargs['conv_impl'] = 'lax'
  if onnx and config.model.startswith(('dense_attention_seg', 'gcn')):
    kwargs['deconv_impl'] = 'lax'
  return dataclasses.replace(config, compute_dtype='float32', model_kwargs=kwargs)


def model_function(config, variables, output_kind: str):
  """images (B, H, W, C) -> logits (B, H, W, K) or classes (B, H, W) int32."""
  import jax.numpy as jnp

  from fanet_jax import trainer
  model = trainer.build_model(config)

  def fn(images):
    logits = model.apply(variables, images, train=False)
    return logits if output_kind == 'logits' else jnp.argmax(logits, -1).astype(jnp.int32)
  return fn


def sidecar(config, size, output_kind: str, source: str, file_format: str) -> dict:
  """What a user of the file needs to feed it and read it (the JSON sidecar)."""
  from input_pipeline import datasets
  names = datasets.CLASS_NAMES.get(config.dataset, ())[:config.num_classes]
  c, (h, w) = config.image_channels, size
  info = {
      'format': file_format, 'model': config.model, 'source': source,
      'input': {'name': 'images', 'dtype': 'float32', 'layout': 'NHWC',
                'shape': ['batch', h, w, c]},
      'output': {'name': output_kind, 'dtype': 'float32' if output_kind == 'logits'
                 else 'int32', 'shape': ['batch', h, w] + (
                     [config.num_classes] if output_kind == 'logits' else [])},
      'modality': config.modality, 'num_classes': config.num_classes,
      'class_names': list(names) or [str(i) for i in range(config.num_classes)],
      'img_scale': list(config.img_scale), 'size_divisor': config.size_divisor,
  }
  if config.modality == 'depth':
    info['normalisation'] = {
        'depth_range_mm': list(config.depth_range_mm), 'missing_value': -1.0,
        'formula': 'clip((depth_mm - lo) / (hi - lo), 0, 1); missing depth (0) -> -1'}
  else:
    info['normalisation'] = {
        'mean': list(config.mean), 'std': list(config.std),
        'formula': '(pixel - mean) / std, RGB order, pixels 0-255'}
  return info


def check_images(config, size):
  """Three inputs: seeded random normal, zeros, and a synthetic frame normalised
  as the sidecar says (smooth gradients and a bright disc; depth with a hole)."""
  import numpy as np
  h, w = size
  c = config.image_channels
  rng = np.random.default_rng(0)
  y, x = np.mgrid[0:h, 0:w].astype(np.float32)
  disc = ((y - h / 2) ** 2 + (x - w / 3) ** 2) < (min(h, w) / 4) ** 2
  if c == 1:
    lo, hi = config.depth_range_mm
    depth = np.where(disc, lo + 0.2 * (hi - lo), lo + (hi - lo) * (0.5 + x / (2 * w)))
    depth[:h // 8, :w // 8] = 0
    frame = np.where(depth > 0, np.clip((depth - lo) / (hi - lo), 0, 1), -1.0)[..., None]
  else:
    pixels = np.stack([255 * x / w, 255 * y / h, np.where(disc, 230.0, 40.0)], -1)
    frame = (pixels - np.asarray(config.mean)) / np.asarray(config.std)
  return np.stack([rng.normal(size=(h, w, c)), np.zeros((h, w, c)), frame]).astype(
      np.float32)


def _subjaxpr(eqn):
  from jax.extend import core
  for key in ('jaxpr', 'call_jaxpr'):
    sub = eqn.params.get(key)
    if isinstance(sub, core.ClosedJaxpr):
      return sub.jaxpr, sub.consts
    if isinstance(sub, core.Jaxpr):
      return sub, ()
  return None


def _max_pool(x, window_dimensions, window_strides, padding, base_dilation,
              window_dilation):
  """lax.reduce_window_max as maxima of strided slices, one axis at a time. The
  edges are padded by repeating the edge: every window that reaches into the
  padding holds the edge element, so this equals -inf padding (for pads < window)."""
  import jax.numpy as jnp
  from jax import lax
  if set(base_dilation) | set(window_dilation) != {1} or any(
      max(p) >= k for p, k in zip(padding, window_dimensions)):
    raise ExportError(f'cannot export a max pool with window {window_dimensions}, '
                      f'padding {padding} and dilations')
  for axis, (k, s, (lo, hi)) in enumerate(zip(window_dimensions, window_strides, padding)):
    if (k, s) == (1, 1):
      continue
    n = x.shape[axis]
    x = jnp.concatenate([lax.slice_in_dim(x, 0, 1, axis=axis)] * lo + [x] +
                        [lax.slice_in_dim(x, n - 1, n, axis=axis)] * hi, axis=axis)
    count = (x.shape[axis] - k) // s + 1
    slices = [lax.slice_in_dim(x, i, i + s * (count - 1) + 1, s, axis) for i in range(k)]
    x = slices[0]
    for other in slices[1:]:
      x = jnp.maximum(x, other)
  return x


def _evaluate(jaxpr, consts, args, env=None, skip=frozenset()):
  """Evaluates a jaxpr with its calls inlined and max pools as slices (traceable);
  `env` holds values already known, `skip` the equations not to evaluate."""
  from jax.extend import core
  env = dict(env or {})
  read = lambda v: v.val if isinstance(v, core.Literal) else env[v]
  for var, value in itertools.chain(zip(jaxpr.constvars, consts), zip(jaxpr.invars, args)):
    env[var] = value
  for index, eqn in enumerate(jaxpr.eqns):
    if index in skip:
      continue
    ins, sub = [read(v) for v in eqn.invars], _subjaxpr(eqn)
    if sub is not None:
      outs = _evaluate(sub[0], sub[1], ins)
    elif eqn.primitive.name == 'reduce_window_max':
      outs = [_max_pool(ins[0], **eqn.params)]
    else:
      outs = eqn.primitive.bind(*ins, **eqn.params)
      outs = outs if eqn.primitive.multiple_results else [outs]
    env.update(zip(eqn.outvars, outs))
  return [read(v) for v in jaxpr.outvars]


def flat_function(fn, spec):
  """`fn` as a function of plain primitives, for jax2onnx.

  The jaxpr of `fn` on `spec`, flattened (calls inlined, max pools as slices); the
  equations that depend on constants alone and give concrete shapes of at most
  FOLD_MAX_ELEMENTS are computed once, in one XLA program, and enter as constants.

  Args:
    fn: images -> outputs, the variables closed over.
    spec: the input's ShapeDtypeStruct (symbolic batch dimension allowed).

  Returns:
    A traceable function of the images with the same outputs.
  """
  import jax
  import numpy as np
  from jax.extend import core
  traced = jax.make_jaxpr(fn)(spec)
  flat = jax.make_jaxpr(lambda x: _evaluate(traced.jaxpr, traced.consts, [x]))(spec)
  known, folded = set(flat.jaxpr.constvars), set()
  for index, eqn in enumerate(flat.jaxpr.eqns):
    shapes = [v.aval.shape for v in eqn.outvars]
    if (all(isinstance(v, core.Literal) or v in known for v in eqn.invars)
        and all(all(isinstance(d, int) for d in s) and np.prod(s) <= FOLD_MAX_ELEMENTS
                for s in shapes)):
      known.update(eqn.outvars)
      folded.add(index)
  used = itertools.chain(*(e.invars for i, e in enumerate(flat.jaxpr.eqns)
                           if i not in folded), flat.jaxpr.outvars)
  needed = list(dict.fromkeys(v for v in used if not isinstance(v, core.Literal)
                              and v in known and v not in flat.jaxpr.constvars))

  def constants(consts):
    env = dict(zip(flat.jaxpr.constvars, consts))
    for index in sorted(folded):  # only equations of constants: no input needed
      eqn = flat.jaxpr.eqns[index]
      outs = eqn.primitive.bind(*[v.val if isinstance(v, core.Literal) else env[v]
                                  for v in eqn.invars], **eqn.params)
      env.update(zip(eqn.outvars, outs if eqn.primitive.multiple_results else [outs]))
    return [env[v] for v in needed]
  values = jax.jit(constants)(flat.consts)
  env = dict(zip(needed, values))
  return lambda images: _evaluate(flat.jaxpr, flat.consts, [images], env, folded)[0]


def to_onnx(fn, spec, output_kind: str, info: dict):
  """The ONNX model of `fn`, through jax2onnx after `flat_function`.

  Args:
    fn: images -> logits or classes, the variables closed over.
    spec: the input's ShapeDtypeStruct (a symbolic batch dimension).
    output_kind: the output's name, 'logits' or 'classes'.
    info: the sidecar, written into metadata_props (each value as JSON).

  Returns:
    The onnx.ModelProto; its input is named 'images'.
  """
  import logging

  import jax2onnx
  import onnx
  check_packages('onnx')
  logging.getLogger('onnx_ir').setLevel(logging.ERROR)  # untyped shape constants
  logging.getLogger('jax2onnx').setLevel(logging.ERROR)
  proto = jax2onnx.to_onnx(flat_function(fn, spec), [spec], model_name=info['model'],
                           input_names=['images'], output_names=[output_kind])
  onnx.helper.set_model_props(proto, {k: json.dumps(v) for k, v in info.items()})
  return proto


def to_stablehlo(fn, spec) -> bytes:
  """The serialised jax.export of `fn` (variables embedded) on `spec` (flatbuffers
  bytes: jax's serialisation needs the flatbuffers package)."""
  import jax
  return jax.export.export(jax.jit(fn))(spec).serialize()


def _run_onnx(path, images):
  import onnxruntime
  session = onnxruntime.InferenceSession(path, providers=['CPUExecutionProvider'])
  return session.run(None, {'images': images})[0]


def _run_stablehlo(path, images):
  import jax
  with open(path, 'rb') as f:
    return jax.export.deserialize(bytearray(f.read())).call(images)


def differences(got, logits, output_kind: str) -> list[float]:
  """Per image: max |logit difference|, or for classes the number of pixels whose
  class differs where the two top logits are further apart than TOLERANCE."""
  import numpy as np
  got, logits = np.asarray(got), np.asarray(logits)
  if output_kind == 'logits':
    return [float(np.abs(g - l).max()) for g, l in zip(got, logits)]
  top2 = np.sort(logits, -1)[..., -2:]
  clear = top2[..., 1] - top2[..., 0] > TOLERANCE
  return [float(((g != l.argmax(-1)) & c).sum()) for g, l, c in zip(got, logits, clear)]


def export(args) -> dict:
  """Everything `main` does but printing progress; returns the sidecar written."""
  import jax
  import jax.numpy as jnp

  size = tuple(args.size)
  check_packages(args.format)
  run = trained.load(args)
  config, variables, source = run.config, run.variables, run.origin
  check_size(config, size)
  onnx = args.format == 'onnx'
  config = export_config(config, onnx)
  suffix = '.onnx' if onnx else '.stablehlo'
  output = args.output or os.path.join(args.workdir or '.', 'export' if args.workdir
                                       else '', f'model-{size[0]}x{size[1]}{suffix}')
  print(f'exporting {config.model} ({source}) as {args.format}, input (batch, '
        f'{size[0]}, {size[1]}, {config.image_channels}), output {args.output_kind}',
        flush=True)
  info = sidecar(config, size, args.output_kind, source, args.format)
  dims = jax.export.symbolic_shape(
      f'batch, {size[0]}, {size[1]}, {config.image_channels}')
  spec = jax.ShapeDtypeStruct(dims, jnp.float32)
  fn = model_function(config, variables, args.output_kind)
  start = time.perf_counter()
  if onnx:
    data = to_onnx(fn, spec, args.output_kind, info).SerializeToString()
  else:
    data = to_stablehlo(fn, spec)
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  with open(output, 'wb') as f:
    f.write(data)
  print(f'wrote {output} ({len(data) / 2**20:.1f} MiB) in '
        f'{time.perf_counter() - start:.1f} s', flush=True)
  images = check_images(config, size)
  logits = jax.jit(model_function(config, variables, 'logits'))(images)
  got = (_run_onnx if onnx else _run_stablehlo)(output, images)
  diffs = differences(got, logits, args.output_kind)
  what = ('max |diff|' if args.output_kind == 'logits' else
          f'pixels of another class (top-2 logits > {TOLERANCE} apart)')
  print(f'{"onnxruntime" if onnx else "jax.export.deserialize"} vs JAX, {what}: '
        f'random {diffs[0]:.2g}, zeros {diffs[1]:.2g}, frame {diffs[2]:.2g}')
  limit = TOLERANCE if args.output_kind == 'logits' else 0
  if max(diffs) > limit:
    os.replace(output, output + '.unverified')
    raise VerificationError(f'{output}: differs from the JAX model by {max(diffs):.3g} '
                            f'(limit {limit}); kept as {output}.unverified')
  info['verification'] = {'inputs': ['random normal (seed 0)', 'zeros', 'synthetic frame'],
                          'measure': what, 'values': diffs}
  with open(output + '.json', 'w') as f:
    json.dump(info, f, indent=2)
  info['written_to'] = output
  return info


class VerificationError(RuntimeError):
  """The exported file does not compute what the JAX model computes: exit 1."""


def main(argv=None) -> int:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  try:
    export(args)
  except (ExportError, *trained.one_line_errors()) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  except VerificationError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  from fanet_jax.runtime import configure_process
  configure_process()  # launch.py's XLA:CPU flags and malloc settings
  sys.exit(main())
