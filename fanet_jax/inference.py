"""Test-time modes of a segmentor, with mmsegmentation's semantics.

- whole: the segmentor sees the whole (rescaled) image once.
- slide: windows of `crop` (H, W) every `stride` (H, W) pixels. Along an axis of
  `size` pixels there are `max(size - crop + stride - 1, 0) // stride + 1` windows;
  window i starts at `i * stride` unless that would pass the border, where it is
  shifted back to end at the border (and an image smaller than the crop is one
  window of the image's size). The logits of the windows covering a pixel are summed
  and divided by their count (mmseg's `EncoderDecoder.slide_inference`).
- test-time augmentation (`tta_probabilities`): each view (a scale of the test scale,
  with or without a horizontal flip) is inferred in either mode, its logits resized
  to the original size and flipped back; the views' softmax probabilities are
  averaged and the class is their arg-max (mmseg's `SegTTAModel.merge_preds`). A
  view at scale r is the test-scale image resized bilinearly by r **[ours]**: mmseg
  rescales the original image to r times the test scale, one interpolation fewer.

`apply_fn(images)` is any function of a (B, h, w, C) batch that returns logits
(B, h, w, K) at the size of its input, e.g. `lambda x: model.apply(variables, x,
train=False)`; everything here traces under `jax.jit` (the windows depend only on
static shapes).
"""
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fanet_jax.models import layers

MODES = ('whole', 'slide')
# mmsegmentation's ratios of the test scale for multi-scale testing.
TTA_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


def window_starts(size: int, crop: int, stride: int) -> list[int]:
  """Start offsets of the sliding windows along one axis of `size` pixels.

  Raises:
    ValueError: `crop` or `stride` below 1.
  """
  if crop < 1 or stride < 1:
    raise ValueError(f'crop and stride must be at least 1, got {crop} and {stride}')
  count = max(size - crop + stride - 1, 0) // stride + 1
  return [max(min(i * stride + crop, size) - crop, 0) for i in range(count)]


def slide_windows(height: int, width: int, crop: Sequence[int],
                  stride: Sequence[int]) -> list[tuple[int, int, int, int]]:
  """The windows (top, bottom, left, right) over an image, row by row."""
  rows = [(y, min(y + crop[0], height)) for y in window_starts(height, crop[0], stride[0])]
  cols = [(x, min(x + crop[1], width)) for x in window_starts(width, crop[1], stride[1])]
  return [(top, bottom, left, right) for top, bottom in rows for left, right in cols]


def slide_logits(apply_fn: Callable, images: jax.Array, crop: Sequence[int],
                 stride: Sequence[int]) -> jax.Array:
  """Logits (B, H, W, K) of `images` (B, H, W, C) by sliding-window inference.

  Every window has the same size (the crop, or the image's side where the image is
  smaller), so the windows go through the model one after the other in a `lax.map`:
  one copy of the model in the compiled program, one window's activations in memory.
  """
  _, height, width, _ = images.shape
  windows = slide_windows(height, width, crop, stride)
  crops = jnp.stack([images[:, top:bottom, left:right]
                     for top, bottom, left, right in windows])
  window_logits = jax.lax.map(lambda x: apply_fn(x).astype(jnp.float32), crops)
  total = 0.0
  count = np.zeros((height, width), np.float32)
  for logits, (top, bottom, left, right) in zip(window_logits, windows):
    total += jnp.pad(logits, ((0, 0), (top, height - bottom), (left, width - right),
                              (0, 0)))
    count[top:bottom, left:right] += 1
  return total / jnp.asarray(count)[None, :, :, None]


def logits(apply_fn: Callable, images: jax.Array, mode: str = 'whole',
           crop: Sequence[int] | None = None,
           stride: Sequence[int] | None = None) -> jax.Array:
  """Logits of `images` at their size in `mode` ('whole' or 'slide').

  Raises:
    ValueError: an unknown mode, or 'slide' without `crop` and `stride`.
  """
  if mode == 'whole':
    return apply_fn(images).astype(jnp.float32)
  if mode != 'slide':
    raise ValueError(f'mode must be one of {MODES}, got {mode!r}')
  if crop is None or stride is None:
    raise ValueError("mode 'slide' needs crop=(H, W) and stride=(H, W)")
  return slide_logits(apply_fn, images, crop, stride)


def merge_views(views: Sequence[jax.Array]) -> jax.Array:
  """Class probabilities (B, H0, W0, K): the mean of the views' softmax, each view's
  logits at the original size and flipped back."""
  return sum(jax.nn.softmax(v, axis=-1) for v in views) / len(views)


def tta_probabilities(apply_fn: Callable, images: jax.Array, output_size: Sequence[int],
                      scales: Sequence[float] = TTA_SCALES, **mode) -> jax.Array:
  """Class probabilities (B, H0, W0, K) averaged over the views: every scale of
  `scales` (of `images`' size), each without and with a left-right flip; a scale's
  two flips go through the model as one batch.

  Args:
    apply_fn: the segmentor's logits at its input's size.
    images: (B, H, W, C) at the test scale.
    output_size: (H0, W0), the original size.
    scales: ratios of the test scale.
    **mode: `logits`'s mode, crop and stride.
  """
  batch, height, width, _ = images.shape
  views = []
  for scale in scales:
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    scaled = images if size == (height, width) else layers.resize_bilinear(images, size)
    both = jnp.concatenate([scaled, scaled[:, :, ::-1]])
    resized = layers.resize_bilinear(logits(apply_fn, both, **mode), tuple(output_size))
    views += [resized[:batch], resized[batch:, :, ::-1]]
  return merge_views(views)


def scores(apply_fn: Callable, images: jax.Array, output_size: Sequence[int],
           mode: str = 'whole', crop: Sequence[int] | None = None,
           stride: Sequence[int] | None = None,
           tta_scales: Sequence[float] = ()) -> jax.Array:
  """Class scores (B, H0, W0, K) at `output_size` (the original size), whose arg-max
  is the prediction: the logits in `mode`, resized bilinearly; or, with `tta_scales`,
  the views' mean probabilities (`tta_probabilities`)."""
  if tta_scales:
    return tta_probabilities(apply_fn, images, output_size, tta_scales, mode=mode,
                             crop=crop, stride=stride)
  return layers.resize_bilinear(logits(apply_fn, images, mode, crop, stride),
                                tuple(output_size))
