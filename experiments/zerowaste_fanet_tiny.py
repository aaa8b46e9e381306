"""FANet-tiny + UperNet on ZeroWaste-f: the paper's fine-tuning recipe (docs/recipes.md section 2).

Command:
  python launch.py --experiment zerowaste_fanet_tiny --set manual_dir=/path/to/zerowaste-f

Hardware: the recipe is 40k iterations at batch 2 with 512x512 crops; one GPU.
Expected: test mIoU 54.89 / pixel accuracy 91.41 in the paper (Table 1), which starts
from the ImageNet-1K pretrained backbone (`--set init_from=...`: a converted PyTorch
checkpoint or an `imagenet_fanet_tiny` workdir; without it the backbone trains from
scratch). Not run by us: ZeroWaste-f is not available on the project's machines.
"""
from fanet_jax.config import Config


def get_config(use_scm: bool = True, use_frm_high: bool = True,
               use_frm_low: bool = True) -> Config:
  """The recipe; the AFE switches give the rows of the ablation (paper Table 2)."""
  return Config(
      dataset='zero_waste_f',
      manual_dir='data/zerowaste-f',
      model='fanet_tiny_upernet',
      model_kwargs=dict(use_scm=use_scm, use_frm_high=use_frm_high,
                        use_frm_low=use_frm_low),
      # Everything else is the Config default, which is the paper's recipe:
      # AdamW 9e-5, warm-up 1500, poly 0.95, 40k steps, batch 2, crop 512,
      # evaluation every 4000 steps, best mIoU kept.
  )
