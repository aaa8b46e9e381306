"""The segmentor: backbone + decode head + optional auxiliary head (docs/models.md section 2).

As mmsegmentation's EncoderDecoder: the decode head's stride-4 logits are resized
(bilinear, align_corners=False) to the input size; the auxiliary head runs only in
training, where its loss is added with weight 0.5. Parameters sit under `backbone/`,
`decode_head/` and `auxiliary_head/`, the prefixes of mmseg checkpoints.
"""
from typing import Optional

import flax.linen as nn
import jax

from fanet_jax.models import layers


class EncoderDecoder(nn.Module):
  """Segmentor returning logits at the input resolution, NHWC.

  Attributes:
    backbone: module `(images, train) -> dict` of features by stride key.
    decode_head: module `(features, train) -> logits`.
    auxiliary_head: optional module `(features, train) -> logits`, training only.
  """
  backbone: nn.Module
  decode_head: nn.Module
  auxiliary_head: Optional[nn.Module] = None

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False):
    """Args: images (B, H, W, C); train: training mode (BN stats, dropout, aux head).

    Returns:
      eval: (B, H, W, num_classes) logits. train: (logits, aux_logits), aux_logits
      also (B, H, W, num_classes), or None without an auxiliary head.
    """
    size = images.shape[1:3]
    features = self.backbone(images, train=train)
    logits = layers.resize_bilinear(self.decode_head(features, train=train), size)
    if not train:
      return logits
    aux_logits = None
    if self.auxiliary_head is not None:
      aux_logits = self.auxiliary_head(features, train=train)
      aux_logits = layers.resize_bilinear(aux_logits, size)
    return logits, aux_logits
