"""An independent PyTorch implementation of the FANet reference (docs/models.md sections 1-2).

Written from docs/models.md, not from fanet_jax, so that it checks the Flax models and the
weight converter: NCHW, exact GELU, channels-first LayerNorm (eps 1e-6), mmseg's
ConvModule / PPM / UPerHead / FCNHead / EncoderDecoder, and exactly the reference
state-dict names (`downsample_layers.{i}`, `stages.{s}.{b}.attn.ctx_conv`, ...,
`decode_head.psp_modules.{i}.1.conv`, `auxiliary_head.convs.0.bn`). Widths, depths and
head channels are constructor arguments. In eval mode stochastic depth is the
identity and the auxiliary head is built but not run; in train mode (`model.train()`)
blocks drop their residual branches per sample (timm's DropPath), BatchNorm uses
batch statistics, Dropout2d drops channels and the segmentor returns
`(logits, aux_logits)`, both at the input size. `train_step` is mmseg's training
iteration (cross-entropy, ignore 255, + 0.5 x the auxiliary loss; AdamW).

It lives in the package (it imports torch, so only on demand) because both the parity
tests (tests/test_torch_parity.py, tests/test_benchmark_torch.py) and
`python -m fanet_jax.speed.benchmark` run it; nothing in it imports fanet_jax.
"""
import torch
import torch.nn.functional as F
from torch import nn

TINY = dict(widths=(96, 192, 384, 768), depths=(2, 2, 8, 2), kernel_sizes=(5, 5, 3, 3))
DROP_PATH_RATE = 0.1  # fanet_tiny's stochastic depth, linear from 0 over the blocks


class LayerNorm2d(nn.Module):
  """LayerNorm over the channels of (B, C, H, W), per pixel, as the reference writes it."""

  def __init__(self, channels: int, eps: float = 1e-6):
    super().__init__()
    self.weight = nn.Parameter(torch.ones(channels))
    self.bias = nn.Parameter(torch.zeros(channels))
    self.eps = eps

  def forward(self, x):
    mean = x.mean(1, keepdim=True)
    var = (x - mean).pow(2).mean(1, keepdim=True)
    x = (x - mean) / torch.sqrt(var + self.eps)
    return self.weight[:, None, None] * x + self.bias[:, None, None]


def _dwconv(channels: int, k: int, stride: int = 1) -> nn.Conv2d:
  return nn.Conv2d(channels, channels, k, stride=stride, padding=k // 2, groups=channels)


class DropPath(nn.Module):
  """timm's stochastic depth: zero a sample's branch with probability p, scale 1/(1-p)."""

  def __init__(self, p: float = 0.0):
    super().__init__()
    self.p = p

  def forward(self, x):
    if not self.training or self.p == 0.0:
      return x
    keep = 1.0 - self.p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x / keep * mask


class FRM(nn.Module):
  """Feature refinement: low (F * Q) and high (F - Q) frequency branches."""

  def __init__(self, dim: int):
    super().__init__()
    self.down = _dwconv(dim, 3, stride=2)
    self.lconv = _dwconv(dim, 3)
    self.hconv = _dwconv(dim, 3)
    self.norm1 = LayerNorm2d(dim)
    self.norm2 = LayerNorm2d(dim)
    self.proj = nn.Conv2d(2 * dim, dim, 1)
    self.act = nn.GELU()

  def forward(self, x):
    q = F.interpolate(self.down(x), size=x.shape[2:], mode='bilinear',
                      align_corners=False)
    low = self.norm1(self.lconv(self.act(x * q)))
    high = self.norm2(self.hconv(self.act(x - q)))
    return self.act(self.proj(torch.cat([low, high], dim=1)))


class AFE(nn.Module):
  """Conv embedding, squeeze to C/2, SCM (ctx_conv, norm3) + FRM (enhance), fuse."""

  def __init__(self, dim: int, kernel_size: int):
    super().__init__()
    half = dim // 2
    self.dwconv = _dwconv(dim, kernel_size)
    self.norm1 = LayerNorm2d(dim)
    self.proj1 = nn.Conv2d(dim, half, 1)
    self.norm2 = LayerNorm2d(half)
    self.ctx_conv = nn.Conv2d(half, half, 7, padding=3, groups=4)
    self.norm3 = LayerNorm2d(half)
    self.enhance = FRM(half)
    self.proj2 = nn.Conv2d(dim, dim, 1)
    self.act = nn.GELU()

  def forward(self, x):
    x = x + self.norm1(self.act(self.dwconv(x)))
    x = self.norm2(self.act(self.proj1(x)))
    ctx = self.norm3(self.act(self.ctx_conv(x)))
    return self.act(self.proj2(torch.cat([ctx, self.enhance(x)], dim=1)))


class ConvMLP(nn.Module):
  """fc1, GELU, h + GELU(depthwise pos(h)), fc2."""

  def __init__(self, dim: int, mlp_ratio: int = 4):
    super().__init__()
    hidden = dim * mlp_ratio
    self.fc1 = nn.Conv2d(dim, hidden, 1)
    self.pos = _dwconv(hidden, 3)
    self.fc2 = nn.Conv2d(hidden, dim, 1)
    self.act = nn.GELU()

  def forward(self, x):
    x = self.act(self.fc1(x))
    x = x + self.act(self.pos(x))
    return self.fc2(x)


class Block(nn.Module):
  """x + DropPath(AFE(LN1(x))), then x + DropPath(ConvMLP(LN2(x)))."""

  def __init__(self, dim: int, kernel_size: int, mlp_ratio: int = 4,
               drop_path: float = 0.0):
    super().__init__()
    self.layer_norm1 = LayerNorm2d(dim)
    self.attn = AFE(dim, kernel_size)
    self.layer_norm2 = LayerNorm2d(dim)
    self.mlp = ConvMLP(dim, mlp_ratio)
    self.drop_path = DropPath(drop_path)

  def forward(self, x):
    x = x + self.drop_path(self.attn(self.layer_norm1(x)))
    return x + self.drop_path(self.mlp(self.layer_norm2(x)))


class FANet(nn.Module):
  """The backbone; with `num_classes` also the ImageNet head (`norm`, `head`).

  `forward` returns the four stage outputs (strides 4..32) without a head, else logits.
  """

  def __init__(self, widths=TINY['widths'], depths=TINY['depths'],
               kernel_sizes=TINY['kernel_sizes'], mlp_ratio: int = 4,
               num_classes=None, in_channels: int = 3,
               drop_path_rate: float = DROP_PATH_RATE):
    super().__init__()
    self.downsample_layers = nn.ModuleList(
        [nn.Conv2d(in_channels, widths[0], 5, stride=4, padding=2)] +
        [nn.Conv2d(a, b, 3, stride=2, padding=1) for a, b in zip(widths[:-1], widths[1:])])
    rates = iter(torch.linspace(0, drop_path_rate, sum(depths)).tolist())
    self.stages = nn.ModuleList(
        nn.Sequential(*[Block(w, k, mlp_ratio, next(rates)) for _ in range(d)])
        for w, d, k in zip(widths, depths, kernel_sizes))
    self.num_classes = num_classes
    if num_classes:
      self.norm = nn.LayerNorm(widths[-1], eps=1e-6)
      self.head = nn.Linear(widths[-1], num_classes)

  def forward_features(self, x):
    outs = []
    for down, stage in zip(self.downsample_layers, self.stages):
      x = stage(down(x))
      outs.append(x)
    return outs

  def forward(self, x):
    outs = self.forward_features(x)
    if not self.num_classes:
      return outs
    return self.head(self.norm(outs[-1].mean(dim=(2, 3))))


class ConvModule(nn.Module):
  """mmcv ConvModule: conv (no bias), BatchNorm2d (eps 1e-5), ReLU."""

  def __init__(self, cin: int, cout: int, k: int):
    super().__init__()
    self.conv = nn.Conv2d(cin, cout, k, padding=k // 2, bias=False)
    self.bn = nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1)
    self.activate = nn.ReLU()

  def forward(self, x):
    return self.activate(self.bn(self.conv(x)))


def _resize(x, size):
  return F.interpolate(x, size=tuple(size), mode='bilinear', align_corners=False)


class PPM(nn.ModuleList):
  """mmseg PPM: per scale Sequential(AdaptiveAvgPool2d(s), ConvModule 1x1), resized back."""

  def __init__(self, pool_scales, in_channels: int, channels: int):
    super().__init__(nn.Sequential(nn.AdaptiveAvgPool2d(s), ConvModule(in_channels,
                                                                       channels, 1))
                     for s in pool_scales)

  def forward(self, x):
    return [_resize(branch(x), x.shape[2:]) for branch in self]


class UPerHead(nn.Module):
  """mmseg UPerHead: PPM on the top level, FPN, fuse at stride 4, conv_seg."""

  def __init__(self, in_channels=TINY['widths'], channels: int = 256,
               pool_scales=(1, 2, 3, 6), num_classes: int = 5, dropout: float = 0.1):
    super().__init__()
    self.psp_modules = PPM(pool_scales, in_channels[-1], channels)
    self.bottleneck = ConvModule(in_channels[-1] + len(pool_scales) * channels,
                                 channels, 3)
    self.lateral_convs = nn.ModuleList(ConvModule(c, channels, 1) for c in in_channels[:-1])
    self.fpn_convs = nn.ModuleList(ConvModule(channels, channels, 3)
                                   for _ in in_channels[:-1])
    self.fpn_bottleneck = ConvModule(len(in_channels) * channels, channels, 3)
    self.dropout = nn.Dropout2d(dropout)
    self.conv_seg = nn.Conv2d(channels, num_classes, 1)

  def forward(self, inputs):
    top = inputs[-1]
    laterals = [conv(x) for conv, x in zip(self.lateral_convs, inputs[:-1])]
    laterals.append(self.bottleneck(torch.cat([top] + self.psp_modules(top), dim=1)))
    for i in range(len(laterals) - 1, 0, -1):
      laterals[i - 1] = laterals[i - 1] + _resize(laterals[i], laterals[i - 1].shape[2:])
    outs = [conv(lat) for conv, lat in zip(self.fpn_convs, laterals[:-1])]
    outs.append(laterals[-1])
    outs = [outs[0]] + [_resize(o, outs[0].shape[2:]) for o in outs[1:]]
    return self.conv_seg(self.dropout(self.fpn_bottleneck(torch.cat(outs, dim=1))))


class FCNHead(nn.Module):
  """mmseg FCNHead, num_convs=1, concat_input=False, on one backbone level."""

  def __init__(self, in_channels: int = 384, channels: int = 256, num_classes: int = 5,
               in_index: int = 2, dropout: float = 0.1):
    super().__init__()
    self.in_index = in_index
    self.convs = nn.Sequential(ConvModule(in_channels, channels, 3))
    self.dropout = nn.Dropout2d(dropout)
    self.conv_seg = nn.Conv2d(channels, num_classes, 1)

  def forward(self, inputs):
    return self.conv_seg(self.dropout(self.convs(inputs[self.in_index])))


class EncoderDecoder(nn.Module):
  """mmseg EncoderDecoder: logits resized to the input size.

  Eval mode returns the decode head's logits; train mode `(logits, aux_logits)`.
  """

  def __init__(self, widths=TINY['widths'], depths=TINY['depths'],
               kernel_sizes=TINY['kernel_sizes'], channels: int = 256, num_classes: int = 5,
               drop_path_rate: float = DROP_PATH_RATE):
    super().__init__()
    self.backbone = FANet(widths, depths, kernel_sizes, drop_path_rate=drop_path_rate)
    self.decode_head = UPerHead(widths, channels, num_classes=num_classes)
    self.auxiliary_head = FCNHead(widths[2], channels, num_classes)

  def forward(self, x):
    features = self.backbone(x)
    logits = _resize(self.decode_head(features), x.shape[2:])
    if not self.training:
      return logits
    return logits, _resize(self.auxiliary_head(features), x.shape[2:])


def segmentation_loss(logits, aux_logits, labels, aux_weight: float = 0.5,
                      ignore_index: int = 255):
  """mmseg's decode CE + aux_weight x auxiliary CE, each averaged over non-ignored pixels."""
  ce = lambda x: F.cross_entropy(x, labels, ignore_index=ignore_index)
  return ce(logits) + aux_weight * ce(aux_logits)


def make_optimizer(model: nn.Module, lr: float = 1e-4,
                   weight_decay: float = 1e-3) -> torch.optim.Optimizer:
  """AdamW over every parameter, betas (0.9, 0.999), eps 1e-8 (docs/recipes.md section 2)."""
  return torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8,
                           weight_decay=weight_decay)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, images, labels):
  """One training iteration: forward (train mode), loss, backward, AdamW update.

  Args:
    model: an EncoderDecoder in train mode.
    optimizer: e.g. `make_optimizer(model)`.
    images: (B, 3, H, W) float32.
    labels: (B, H, W) int64, 255 = ignore.

  Returns:
    The loss (a float).
  """
  optimizer.zero_grad(set_to_none=True)
  logits, aux_logits = model(images)
  loss = segmentation_loss(logits, aux_logits, labels)
  loss.backward()
  optimizer.step()
  return loss.item()


@torch.no_grad()
def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
  """Makes every norm non-trivial: random LayerNorm / BatchNorm affine parameters and
  BatchNorm statistics (running_var positive); convs keep PyTorch's random init.

  Returns:
    `model`, in eval mode.
  """
  gen = torch.Generator().manual_seed(seed)
  randn = lambda t: torch.randn(t.shape, generator=gen)
  for module in model.modules():
    if isinstance(module, (LayerNorm2d, nn.LayerNorm, nn.BatchNorm2d)):
      module.weight.copy_(1.0 + 0.2 * randn(module.weight))
      module.bias.copy_(0.2 * randn(module.bias))
    if isinstance(module, nn.BatchNorm2d):
      module.running_mean.copy_(0.2 * randn(module.running_mean))
      module.running_var.copy_(0.5 + torch.rand(module.running_var.shape, generator=gen))
      module.num_batches_tracked.fill_(1000)
  return model.eval()
