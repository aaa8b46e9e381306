"""Inside the model: the maps of the papers' figures, taken from the real forward pass
(`mutable=['intermediates']`), and drawn.

- FANet (paper Fig. 6): each FRM sows its input `F`, the smoothed `Q`, the
  high-frequency `R` = F - Q, the low-frequency `S` = F * Q (of the enabled
  branches) and its `output` (models/fanet.py).
- DenseAttentionSeg (paper Fig. 7): the model sows its six attention maps a_j
  (`attention_maps`); the weight each level's skip gets from the others,
  `fine_i * coarse_i`, is `dense_attention.level_weight` (the model's own function)
  of those maps.
- Contour maps (paper Fig. 8), given the labels: B(S(Y)) and B(S(P)) of
  `contour_loss` (`edge_strength`, `blur`), built as `contour_loss_from_probs`
  builds them (P and Y zeroed where the label is ignored), from the logits of the
  whole image resized to the label's size.

A heat map shows a map's mean over its channels, at the image's size (bilinear):
the mean is linear, so the R panel is exactly the F panel minus the Q panel, and its
sign is the features' own; a principal component's sign and mix of channels would
change from map to map. Each panel has its own colour range (the contour maps share one).
"""
import os

import numpy as np

from fanet_jax import trained
from fanet_jax.report.figures import pyplot, save_figure

FRM_MAPS = (('F', 'F (input)'), ('Q', 'Q (smoothed)'), ('R', 'R = F - Q'),
            ('S', 'S = F * Q'), ('output', 'output'))
# Cheap to compile, slower to run: the capture runs once or twice per command.
_CHEAP = {'xla_backend_optimization_level': 0, 'xla_llvm_disable_expensive_passes': True}


def family(model) -> str | None:
  """'fanet' (a FANet backbone with an FRM), 'dense_attention' (with attention), or
  None: a model without such maps."""
  from fanet_jax.models import dense_attention, fanet
  backbone = getattr(model, 'backbone', None)
  if isinstance(backbone, fanet.FANet) and (backbone.use_frm_low or
                                            backbone.use_frm_high):
    return 'fanet'
  if isinstance(model, dense_attention.DenseAttentionSeg) and model.attention != 'none':
    return 'dense_attention'
  return None


def coarsest_stride(model) -> int:
  """The stride of the model's coarsest map (32 for FANet, the output stride else)."""
  backbone = getattr(model, 'backbone', None)
  if backbone is not None and hasattr(backbone, 'depths'):
    return 4 * 2 ** (len(backbone.depths) - 1)
  return getattr(model, 'output_stride', 1)


def frm_blocks(model, stage: int | None = None, block: int | None = None) -> list:
  """(stage, block) of the rows drawn: each stage's last block, a stage's blocks, or one.

  Raises:
    RunError: a stage or block out of range (naming the valid one).
  """
  depths = model.backbone.depths
  if stage is None:
    if block is not None:
      raise trained.RunError('--block goes with --stage')
    return [(s, d - 1) for s, d in enumerate(depths)]
  if not 0 <= stage < len(depths):
    raise trained.RunError(f'--stage {stage} is out of range: the model has stages '
                           f'0 to {len(depths) - 1}')
  if block is None:
    return [(stage, b) for b in range(depths[stage])]
  if not 0 <= block < depths[stage]:
    raise trained.RunError(f'--block {block} is out of range: stage {stage} has blocks '
                           f'0 to {depths[stage] - 1}')
  return [(stage, block)]


class Capture:
  """The maps of a batch, by one program per input shape, compiled cheaply:
  `capture(images, labels=None)` -> {'frm': {(stage, block): {name: (B, h, w, c)}},
  'levels', 'attention': [a_j], 'weight': [w_j], 'contour_label', 'contour_pred':
  (B, H, W), 'probs'}, numpy arrays, of what the model has."""

  def __init__(self, run: trained.Trained):
    import jax
    self.run, self.family = run, family(run.model)
    self.variables = jax.device_put(run.variables)
    self._compiled = {}

  def _maps(self, variables, images, labels):
    import jax
    import jax.numpy as jnp
    from fanet_jax import contour_loss
    from fanet_jax.models import dense_attention, layers
    model, config = self.run.model, self.run.config
    if self.family == 'fanet' and labels is None:  # the backbone holds every FRM
      logits, (_, state) = None, model.apply(
          variables, images, method=lambda m, x: m.backbone(x, train=False),
          mutable=['intermediates'])
    else:
      logits, state = model.apply(variables, images, train=False,
                                  mutable=['intermediates'])
    found, maps = state.get('intermediates', {}), {}
    if self.family == 'fanet':
      maps['frm'] = {tuple(int(i) for i in name.split('_')[1:]): {
          k: v[0] for k, v in block['attn']['enhance'].items()}
                     for name, block in found['backbone'].items()}
    elif self.family == 'dense_attention':
      a = found['attention_maps'][0]
      maps['levels'], maps['attention'] = list(found['levels'][0]), list(a)
      maps['weight'] = [dense_attention.level_weight(a, i, x.shape[1:3], x.dtype)
                        for i, x in enumerate(a)]
    if labels is not None:
      probs = jax.nn.softmax(layers.resize_bilinear(logits, labels.shape[1:3]), -1)
      valid = labels != config.ignore_index
      onehot = jax.nn.one_hot(jnp.where(valid, labels, 0), config.num_classes)
      probs, onehot = (jnp.where(valid[..., None], m, 0.0) for m in (probs, onehot))
      maps['contour_label'] = contour_loss.blur(contour_loss.edge_strength(onehot))
      maps['contour_pred'] = contour_loss.blur(contour_loss.edge_strength(probs))
      maps['probs'] = probs
    return maps

  def __call__(self, images, labels=None) -> dict:
    import jax
    key = (images.shape, None if labels is None else labels.shape)
    if key not in self._compiled:
      self._compiled[key] = jax.jit(self._maps).lower(
          self.variables, images, labels).compile(compiler_options=_CHEAP)
    return jax.device_get(self._compiled[key](self.variables, images, labels))


def heat(value, size) -> np.ndarray:
  """A map (h, w, c)'s channel mean, resized to `size` (H, W) bilinearly."""
  from PIL import Image
  mean = np.asarray(value, np.float32)
  mean = mean.mean(-1) if mean.ndim == 3 else mean
  return np.asarray(Image.fromarray(mean).resize((size[1], size[0]), Image.BILINEAR))


def _panel(ax, image, value=None, title='', cmap='viridis', over=False, limits=None):
  """One axis: the image, or a heat map (over the image with `over`), titled."""
  ax.set_xticks([])
  ax.set_yticks([])
  ax.set_title(title, fontsize=8)
  if value is None:
    ax.imshow(image)
    return
  low, high = limits or (float(value.min()), float(value.max()))
  if cmap == 'RdBu_r':  # signed: centred on 0
    low, high = -max(abs(low), abs(high)), max(abs(low), abs(high))
  if over:
    ax.imshow(image)
  ax.imshow(value, cmap=cmap, vmin=low, vmax=high, alpha=0.6 if over else 1.0)
  ax.set_xlabel(f'{low:.3g} to {high:.3g}', fontsize=7)


def _figure(rows: int, columns: int, size):
  plt = pyplot()
  width = 1.7
  fig, axes = plt.subplots(rows, columns, squeeze=False, figsize=(
      columns * width, rows * (width * size[0] / size[1] + 0.3) + 0.2), dpi=100)
  fig.subplots_adjust(wspace=0.1, hspace=0.3)  # cheaper than a constrained layout
  return fig, axes


def draw_frm(image, frm: dict, blocks: list, path: str, title: str = '') -> str:
  """Fig. 6: rows the blocks, columns the image, F, Q, R, S and the FRM's output."""
  size = image.shape[:2]
  fig, axes = _figure(len(blocks), 1 + len(FRM_MAPS), size)
  for i, (row, (stage, block)) in enumerate(zip(axes, blocks)):
    maps, first = frm[(stage, block)], i == 0
    _panel(row[0], image, title='image' if first else '')
    row[0].set_ylabel(f'stage {stage}, block {block}', fontsize=8)
    for ax, (name, label) in zip(row[1:], FRM_MAPS):
      if name not in maps:
        _panel(ax, np.ones(size + (3,)), title=label if first else '')
        ax.set_xlabel('branch off', fontsize=7)
        continue
      _panel(ax, image, heat(maps[name], size), label if first else '',
             cmap='RdBu_r' if name == 'R' else 'viridis')
  fig.suptitle(title or 'FRM maps (channel means)', fontsize=9)
  return save_figure(fig, path)


def draw_attention(grey, attention: list, weight: list, path: str,
                   title: str = '') -> str:
  """Fig. 7: per level, a_j and the weight its skip gets from the others, over the
  depth shown grey."""
  size = grey.shape[:2]
  fig, axes = _figure(2, 1 + len(attention), size)
  for row, maps, what in ((axes[0], attention, 'a'), (axes[1], weight, 'weight')):
    first = what == 'a'
    _panel(row[0], grey, title='depth' if first else '')
    row[0].set_ylabel('attention a_j' if first else 'fine x coarse', fontsize=8)
    for j, (ax, value) in enumerate(zip(row[1:], maps)):
      _panel(ax, grey, heat(value, size), f'L{j + 1} ({value.shape[0]}x{value.shape[1]})'
             if first else '', cmap='inferno', over=True)
  fig.suptitle(title or 'attention maps (channel means) over the depth', fontsize=9)
  return save_figure(fig, path)


def draw_contours(image, label_map, contour_label, contour_pred, loss: float, path: str,
                  title: str = '') -> str:
  """Fig. 8: the image, the labels, B(S(Y)), B(S(P)) and their squared difference."""
  fig, axes = _figure(1, 5, image.shape[:2])
  top = float(max(contour_label.max(), contour_pred.max()))
  _panel(axes[0, 0], image, title='image')
  _panel(axes[0, 1], label_map, title='ground truth')
  _panel(axes[0, 2], None, contour_label, 'B(S(Y)), labels', 'magma',
         limits=(0.0, top))
  _panel(axes[0, 3], None, contour_pred, 'B(S(P)), prediction', 'magma',
         limits=(0.0, top))
  _panel(axes[0, 4], None, (contour_label - contour_pred) ** 2,
         f'squared diff. (mean {loss:.3g})', 'magma')
  fig.suptitle(title or 'contour maps of the contour loss', fontsize=9)
  return save_figure(fig, path)


def write_figures(run: trained.Trained, capture: Capture, image, label, output: str,
                  prefix: str = '', blocks: list | None = None) -> list[str]:
  """The figures of one image (as read; `label` (H, W) or None) into `output`;
  returns their paths. FANet: `prefix`frm.png; DenseAttentionSeg:
  `prefix`attention.png; with a label: `prefix`contours.png."""
  from fanet_jax import predict
  from input_pipeline import datasets
  config = run.config
  shown = (predict.depth_to_grey(image, config.depth_range_mm) if image.shape[-1] == 1
           else image)
  model_input = predict.preprocess(image, config)[None]
  maps = capture(model_input, None if label is None else label[None])
  os.makedirs(output, exist_ok=True)
  paths = []
  if 'frm' in maps:
    frm = {key: {k: v[0] for k, v in value.items()} for key, value in maps['frm'].items()}
    draw_frm(shown, frm, blocks or frm_blocks(run.model),
             os.path.join(output, f'{prefix}frm.png'))
    paths.append(os.path.join(output, f'{prefix}frm.png'))
  if 'attention' in maps:
    draw_attention(shown, [a[0] for a in maps['attention']], [w[0] for w in maps['weight']],
                   os.path.join(output, f'{prefix}attention.png'))
    paths.append(os.path.join(output, f'{prefix}attention.png'))
  if label is not None:
    valid = label != config.ignore_index
    gt, pred = maps['contour_label'][0], maps['contour_pred'][0]
    loss = float(((gt - pred) ** 2)[valid].sum() / max(valid.sum(), 1))
    palette = np.asarray(list(datasets.PALETTES[config.dataset][:config.num_classes])
                         + [(150, 150, 150)] * (256 - config.num_classes), np.uint8)
    draw_contours(shown, palette[label], gt, pred, loss,
                  os.path.join(output, f'{prefix}contours.png'))
    paths.append(os.path.join(output, f'{prefix}contours.png'))
  return paths
