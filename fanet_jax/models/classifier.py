"""ImageNet classifier on top of a backbone (FANet paper Table 4; docs/models.md section 1).

Global average pool of the stride-32 features, LayerNorm (eps 1e-6), Dense to the
classes. The backbone is named `backbone`, like in the segmentor, so the pretrained
subtree moves across unchanged; `norm` and `head` match the reference's names.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from fanet_jax.models import layers

Dtype = Any


class ImageClassifier(nn.Module):
  """Backbone -> mean over the s32 pixels -> LayerNorm -> Dense.

  Attributes:
    backbone: module returning a dict with key 's32'.
    num_classes: output classes (1000 for ImageNet-1K).
    dtype: computation dtype of the norm and head.
  """
  backbone: nn.Module
  num_classes: int = 1000
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    """Args: images (B, H, W, 3); train: enables the backbone's stochastic depth.

    Returns:
      (B, num_classes) logits.
    """
    x = self.backbone(images, train=train)['s32']
    # Pool in float32: a bf16 mean over thousands of pixels loses precision.
    x = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    x = layers.LayerNorm(dtype=self.dtype, name='norm')(x)
    return nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32,
                    kernel_init=layers.trunc_normal(), name='head')(x)
