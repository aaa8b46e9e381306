"""FocalNet-T (LRF) + UperNet on ZeroWaste-f: FANet's recipe on the FocalNet backbone.

FANet paper Table 3's FocalNet-T row; the model is docs/models.md section 9, the
recipe docs/recipes.md section 2 (the Config defaults, as `zerowaste_fanet_tiny`).

Command (the release's ImageNet-1K checkpoint `focalnet_tiny_lrf.pth`, from
github.com/microsoft/FocalNet, into the segmentor's backbone, then fine-tune):
  python -m fanet_jax.pytorch.convert --model focalnet_tiny_lrf_backbone \\
      --input focalnet_tiny_lrf.pth --output pretrained/focalnet_tiny_lrf_backbone
  python launch.py --experiment zerowaste_focalnet_tiny --set manual_dir=/path/to/zerowaste-f \\
      init_from=pretrained/focalnet_tiny_lrf_backbone

Hardware: 40k iterations at batch 2 with 512x512 crops; one GPU.
Expected: test mIoU 51.71 in the FANet paper (Table 3, FocalNet-T). Not run by us:
ZeroWaste-f is not available on the project's machines.
Model `focalnet_tiny_lrf_upernet`: the release's UperNet config (focal window 9,
stochastic depth 0.3, output norms, UPerHead 512, FCNHead 256). The release trains
its ADE20K segmentors with its own recipe (AdamW 6e-5, weight decay 0.01, poly power
1, auxiliary weight 0.4, 160k iterations at batch 16); the FANet paper compares the
backbones under one recipe, so this is FANet's.
"""
from fanet_jax.config import Config


def get_config() -> Config:
  return Config(
      dataset='zero_waste_f',
      manual_dir='data/zerowaste-f',
      model='focalnet_tiny_lrf_upernet',
      # Everything else is the Config default, FANet's recipe: AdamW 9e-5, warm-up
      # 1500, poly 0.95, 40k steps, batch 2, crop 512, evaluation every 4000 steps.
  )
