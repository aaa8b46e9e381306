"""An independent PyTorch FocalNet (docs/models.md section 9), for the parity tests.

Written from the description in docs/models.md section 9 (itself from the FocalNet
paper and its public release), not from fanet_jax.models.focalnet. The state-dict
names are the release's (`patch_embed.proj`, `layers.{i}.blocks.{j}.modulation.
focal_layers.{k}.0`, `layers.{i}.downsample.norm`, classifier `norm` / `head`,
segmentation backbone `norm{i}`), so the release's checkpoints load into it. Tensors
are channels-last (B, H, W, C) between layers, as the Linear layers and LayerNorms
want them; convs see NCHW. The segmentor reuses the mmseg heads of `reference.py`
(`UPerHead`, `FCNHead`), which take NCHW features. Eval mode only matters here:
stochastic depth is the identity there.
"""
import torch
import torch.nn.functional as F
from torch import nn

from fanet_jax.pytorch import reference as ref

TINY_LRF = dict(embed_dim=96, depths=(2, 2, 6, 2), focal_levels=(3, 3, 3, 3),
                focal_windows=(3, 3, 3, 3))
BASE_LRF = dict(embed_dim=128, depths=(2, 2, 18, 2), focal_levels=(3, 3, 3, 3),
                focal_windows=(3, 3, 3, 3))


def _nchw(x):
  return x.permute(0, 3, 1, 2)


def _nhwc(x):
  return x.permute(0, 2, 3, 1)


class FocalModulation(nn.Module):
  """f -> (q, ctx, gates); hierarchical depthwise contexts + a global one; q * h(.)."""

  def __init__(self, dim: int, focal_level: int, focal_window: int, focal_factor: int = 2):
    super().__init__()
    self.focal_level = focal_level
    self.f = nn.Linear(dim, 2 * dim + focal_level + 1)
    self.focal_layers = nn.ModuleList()
    for level in range(focal_level):
      k = focal_factor * level + focal_window
      self.focal_layers.append(nn.Sequential(
          nn.Conv2d(dim, dim, k, padding=k // 2, groups=dim, bias=False), nn.GELU()))
    self.h = nn.Conv2d(dim, dim, 1)
    self.proj = nn.Linear(dim, dim)

  def forward(self, x):
    dim = x.shape[-1]
    q, ctx, gates = torch.split(self.f(x), [dim, dim, self.focal_level + 1], dim=-1)
    ctx, gates = _nchw(ctx), _nchw(gates)
    modulator = torch.zeros_like(ctx)
    for level, layer in enumerate(self.focal_layers):
      ctx = layer(ctx)
      modulator = modulator + ctx * gates[:, level:level + 1]
    glob = F.gelu(ctx.mean(dim=(2, 3), keepdim=True))
    modulator = modulator + glob * gates[:, self.focal_level:]
    return self.proj(q * _nhwc(self.h(modulator)))


class Mlp(nn.Module):
  """fc1 (ratio 4), exact GELU, fc2."""

  def __init__(self, dim: int, mlp_ratio: float = 4.0):
    super().__init__()
    self.fc1 = nn.Linear(dim, int(dim * mlp_ratio))
    self.fc2 = nn.Linear(int(dim * mlp_ratio), dim)

  def forward(self, x):
    return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
  """x + DropPath(modulation(norm1(x))), then x + DropPath(mlp(norm2(x)))."""

  def __init__(self, dim: int, focal_level: int, focal_window: int, drop_path: float = 0.0):
    super().__init__()
    self.norm1 = nn.LayerNorm(dim)
    self.modulation = FocalModulation(dim, focal_level, focal_window)
    self.drop_path = ref.DropPath(drop_path)
    self.norm2 = nn.LayerNorm(dim)
    self.mlp = Mlp(dim)

  def forward(self, x):
    x = x + self.drop_path(self.modulation(self.norm1(x)))
    return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
  """Zero-pad bottom / right to a multiple of p, p x p conv with stride p, LayerNorm."""

  def __init__(self, cin: int, cout: int, patch: int):
    super().__init__()
    self.patch = patch
    self.proj = nn.Conv2d(cin, cout, patch, stride=patch)
    self.norm = nn.LayerNorm(cout)

  def forward(self, x):
    h, w = x.shape[1:3]
    x = F.pad(_nchw(x), (0, -w % self.patch, 0, -h % self.patch))
    return self.norm(_nhwc(self.proj(x)))


class Stage(nn.Module):
  """`blocks`, then (stages 1-3) `downsample` to twice the width."""

  def __init__(self, dim: int, focal_level: int, focal_window: int, rates,
               downsample: bool):
    super().__init__()
    self.blocks = nn.ModuleList(Block(dim, focal_level, focal_window, r) for r in rates)
    self.downsample = PatchEmbed(dim, 2 * dim, 2) if downsample else None


class FocalNet(nn.Module):
  """Backbone; `num_classes` adds the classifier's `norm` + `head`, `out_norms` the
  segmentation backbone's `norm{i}`.

  `forward` returns the four stage outputs (NCHW) without a head, else logits.
  """

  def __init__(self, embed_dim=96, depths=(2, 2, 6, 2), focal_levels=(3, 3, 3, 3),
               focal_windows=(3, 3, 3, 3), num_classes=None, out_norms: bool = False,
               drop_path_rate: float = 0.0):
    super().__init__()
    dims = [embed_dim * 2 ** i for i in range(len(depths))]
    self.patch_embed = PatchEmbed(3, dims[0], 4)
    rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
    starts = [sum(depths[:i]) for i in range(len(depths))]
    self.layers = nn.ModuleList(
        Stage(dims[i], focal_levels[i], focal_windows[i],
              rates[starts[i]:starts[i] + depths[i]], i < len(depths) - 1)
        for i in range(len(depths)))
    self.out_norms = out_norms
    if out_norms:
      for i, dim in enumerate(dims):
        self.add_module(f'norm{i}', nn.LayerNorm(dim))
    self.num_classes = num_classes
    if num_classes:
      self.norm = nn.LayerNorm(dims[-1])
      self.head = nn.Linear(dims[-1], num_classes)

  def forward_features(self, images):
    """Args: images (B, 3, H, W). Returns: the four stage outputs, (B, h, w, C) each."""
    x = self.patch_embed(_nhwc(images))
    outs = []
    for i, stage in enumerate(self.layers):
      for block in stage.blocks:
        x = block(x)
      outs.append(getattr(self, f'norm{i}')(x) if self.out_norms else x)
      if stage.downsample is not None:
        x = stage.downsample(x)
    return outs

  def forward(self, images):
    outs = self.forward_features(images)
    if self.num_classes:
      return self.head(self.norm(outs[-1]).mean(dim=(1, 2)))
    return [_nchw(o) for o in outs]


class EncoderDecoder(nn.Module):
  """mmseg's EncoderDecoder: FocalNet (with `norm{i}`), UPerHead, FCNHead on stage 3."""

  def __init__(self, embed_dim=96, depths=(2, 2, 6, 2), focal_levels=(3, 3, 3, 3),
               focal_windows=(9, 9, 9, 9), channels: int = 512, aux_channels: int = 256,
               num_classes: int = 5):
    super().__init__()
    dims = [embed_dim * 2 ** i for i in range(len(depths))]
    self.backbone = FocalNet(embed_dim, depths, focal_levels, focal_windows,
                             out_norms=True)
    self.decode_head = ref.UPerHead(dims, channels, num_classes=num_classes)
    self.auxiliary_head = ref.FCNHead(dims[2], aux_channels, num_classes)

  def forward(self, x):
    logits = self.decode_head(self.backbone(x))
    return F.interpolate(logits, size=x.shape[2:], mode='bilinear', align_corners=False)
