"""FocalNet-T (LRF) on ImageNet-1K: FANet's pretraining recipe with the FocalNet classifier.

The FANet paper's Table 4 compares with FocalNet-T; the model is docs/models.md
section 9, the recipe docs/recipes.md section 4 (that of `imagenet_fanet_tiny`, the
Swin recipe the FocalNet paper follows too), with the stochastic depth of the
release's configs/focalnet_tiny_lrf.yaml, 0.2 (the variant's default).

Command (one host, all of its GPUs in one process):
  python launch.py --experiment imagenet_focalnet_tiny --set data_dir=/data/tfds
Command (2 hosts x 8 GPUs): `sbatch scripts/slurm_imagenet.sh` with this experiment;
docs/training.md section 5. Data: TFDS `imagenet2012` as array_record, as for
`imagenet_fanet_tiny`.

Hardware: 16 GPUs at a global batch of 1280 (`--set grad_accum_steps=2` on 8).
Expected: top-1 82.3 (FANet paper Table 4 and the FocalNet paper, FocalNet-T LRF,
28.6 M parameters). Not run here (no GPUs, no ImageNet on this machine).
Then, for `zerowaste_focalnet_tiny`: its backbone has focal window 9 and output norms,
so the workdir is not an `init_from` as it is; write it out as the release's layout
(`python -m fanet_jax.pytorch.convert --model focalnet_tiny_lrf --input
workdirs/imagenet_focalnet_tiny --output focalnet_tiny_lrf.pth --to torch`) and convert
that as that experiment's docstring says.
"""
import dataclasses

from experiments import imagenet_fanet_tiny
from fanet_jax.config import Config


def get_config() -> Config:
  # Stochastic depth 0.2 is the variant's default.
  return dataclasses.replace(imagenet_fanet_tiny.get_config(), model='focalnet_tiny_lrf')
