"""A generated ZeroWaste-f folder in the release layout, at the release's resolution.

`{train,val,test}/{data,sem_seg}/NN_frame_NNNNNN.PNG`: 1920x1080 RGB frames of large
flat-coloured objects (ellipses and boxes) on a grey textured belt, uint8 labels
0..4. Recipes are tested on this rather than on small frames, because the recipe's
random rescale (ratio 0.5-2 of 2048x512) followed by the pad to 512x512 only pads
large areas of the crop at this resolution.
"""
import os

import numpy as np
from PIL import Image, ImageDraw

WIDTH, HEIGHT = 1920, 1080
# Object colours by class (not the palette: colour alone should not decide a class).
COLOURS = {1: (30, 140, 200), 2: (150, 110, 60), 3: (170, 170, 180), 4: (220, 220, 60)}


def _frame(rng: np.random.Generator) -> tuple[Image.Image, Image.Image]:
  belt = 110 + rng.normal(0, 12, (HEIGHT // 8, WIDTH // 8, 1))
  belt = np.repeat(np.repeat(belt, 8, axis=0), 8, axis=1)
  noise = rng.normal(0, 4, (HEIGHT, WIDTH, 3))
  image = Image.fromarray(np.clip(belt + noise, 0, 255).astype(np.uint8))
  label = Image.new('L', (WIDTH, HEIGHT), 0)
  draw_image, draw_label = ImageDraw.Draw(image), ImageDraw.Draw(label)
  for _ in range(6):
    cls = int(rng.integers(1, 5))
    x0, y0 = int(rng.integers(0, WIDTH - 400)), int(rng.integers(0, HEIGHT - 300))
    box = [x0, y0, x0 + int(rng.integers(150, 400)), y0 + int(rng.integers(100, 300))]
    shape = 'ellipse' if cls % 2 else 'rectangle'
    getattr(draw_image, shape)(box, fill=COLOURS[cls])
    getattr(draw_label, shape)(box, fill=cls)
  return image, label


def write(root: str, frames_per_split: int = 2, seed: int = 0) -> None:
  """Writes the folder under `root` (PNG files named as in the release)."""
  rng = np.random.default_rng(seed)
  for split in ('train', 'val', 'test'):
    for folder in ('data', 'sem_seg'):
      os.makedirs(os.path.join(root, split, folder), exist_ok=True)
    for index in range(frames_per_split):
      image, label = _frame(rng)
      name = f'{index:02d}_frame_{index * 10:06d}.PNG'
      image.save(os.path.join(root, split, 'data', name))
      label.save(os.path.join(root, split, 'sem_seg', name))
