"""FocalNet-B (LRF) + UperNet on ZeroWaste-f: FANet's recipe on the FocalNet backbone.

FANet paper Tables 1 and 3's FocalNet-B row; the model is docs/models.md section 9,
the recipe docs/recipes.md section 2 (the Config defaults, as `zerowaste_fanet_tiny`).

Command (the release's ImageNet-1K checkpoint `focalnet_base_lrf.pth`, from
github.com/microsoft/FocalNet, into the segmentor's backbone, then fine-tune):
  python -m fanet_jax.pytorch.convert --model focalnet_base_lrf_backbone \\
      --input focalnet_base_lrf.pth --output pretrained/focalnet_base_lrf_backbone
  python launch.py --experiment zerowaste_focalnet_base --set manual_dir=/path/to/zerowaste-f \\
      init_from=pretrained/focalnet_base_lrf_backbone

Hardware: 40k iterations at batch 2 with 512x512 crops; one GPU (126 M parameters at
150 classes, 125.6 M here).
Expected: test mIoU 54.26 in the FANet paper's Table 3 and 53.26 in its Table 1 (the
paper gives both for FocalNet-B). Not run by us: ZeroWaste-f is not available on the
project's machines.
Model `focalnet_base_lrf_upernet`: the release's UperNet config (focal window 9,
stochastic depth 0.3, output norms, UPerHead 512, FCNHead 256); the recipe is
FANet's, as for `zerowaste_focalnet_tiny`, whose docstring lists the release's own.
"""
from fanet_jax.config import Config


def get_config() -> Config:
  return Config(
      dataset='zero_waste_f',
      manual_dir='data/zerowaste-f',
      model='focalnet_base_lrf_upernet',
      # Everything else is the Config default, FANet's recipe (docs/recipes.md section 2).
  )
