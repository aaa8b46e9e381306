"""The input-pipeline case of `python -m fanet_jax.speed.benchmark`: grain images/second.

Feeds `input_pipeline.segmentation_training.rgb_train_loader` with the ZeroWaste-f training transforms
(docs/data.md section 2: random rescale of a 1920x1080 frame with img_scale (2048, 512)
and ratio 0.5-2, 512x512 crop with cat_max_ratio 0.75, flip, photometric distortion,
normalise, pad) from an in-memory source of synthetic frames stored as PNG bytes and
decoded on every read, as the TFDS source does. Frames are smooth colour fields with
noise (they compress like photos, not like pure noise) and labels are blobs of the
five classes, so the crop's class-ratio check behaves as on real data.
"""
import io
import time

import numpy as np
from PIL import Image

from input_pipeline import image_files

# docs/data.md section 1.
FRAME_SIZE = (1080, 1920)
ZEROWASTE = dict(num_classes=5, crop_size=(512, 512), img_scale=(2048, 512),
                 ratio_range=(0.5, 2.0), cat_max_ratio=0.75, flip_prob=0.5,
                 photometric=True, mean=(123.675, 116.28, 103.53),
                 std=(58.395, 57.12, 57.375), ignore_index=255)


def synthetic_frame(seed: int, size: tuple[int, int] = FRAME_SIZE) -> tuple[bytes, bytes]:
  """PNG bytes of a synthetic (image, label) pair of `size` (H, W)."""
  rng = np.random.default_rng(seed)
  h, w = size
  coarse = rng.uniform(0, 255, (h // 60 + 2, w // 60 + 2, 3)).astype(np.float32)
  smooth = np.asarray(Image.fromarray(coarse.astype(np.uint8)).resize((w, h),
                                                                       Image.BILINEAR))
  image = np.clip(smooth + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
  blobs = rng.integers(0, 5, (h // 120 + 1, w // 120 + 1), dtype=np.uint8)
  label = np.asarray(Image.fromarray(blobs).resize((w, h), Image.NEAREST))
  return image_files.png_bytes(image), image_files.png_bytes(label)


class PngSource:
  """Random-access source of `{'image', 'label', 'file_name'}` decoded from PNG bytes.

  Holds a few frames and serves them `length` times over (picklable, so grain's
  worker processes can read it).
  """

  def __init__(self, frames: list, length: int):
    self._frames = frames
    self._length = length

  def __len__(self) -> int:
    return self._length

  def __getitem__(self, index: int) -> dict:
    image, label = self._frames[index % len(self._frames)]
    return {'image': np.asarray(Image.open(io.BytesIO(image)).convert('RGB')),
            'label': np.asarray(Image.open(io.BytesIO(label))),
            'file_name': f'synthetic_{index}.PNG'}


def run_case(batch: int = 2, worker_count: int = 2, num_batches: int = 40,
             warmup_batches: int = 5, num_frames: int = 4,
             frame_size: tuple[int, int] = FRAME_SIZE) -> dict:
  """Images/second of the training loader after its workers have started.

  Args:
    batch: examples per batch (the FANet recipe's 2).
    worker_count: grain worker processes.
    num_batches: timed batches.
    warmup_batches: batches read before timing (worker start-up, first reads).
    num_frames: distinct synthetic frames in the source.
    frame_size: (H, W) of the frames (ZeroWaste-f's 1080x1920; smaller in tests).

  Returns:
    {'images_per_s', 'batch', 'worker_count', 'frame_size', 'crop_size',
     'seconds', 'images'}.
  """
  from input_pipeline import segmentation_training  # pylint: disable=import-outside-toplevel

  frames = [synthetic_frame(i, frame_size) for i in range(num_frames)]
  source = PngSource(frames, length=batch * (num_batches + warmup_batches) * 4)
  loader = segmentation_training.rgb_train_loader(source, batch_size=batch, seed=0,
                                 worker_count=worker_count, **ZEROWASTE)
  iterator = iter(loader)
  for _ in range(warmup_batches):
    next(iterator)
  start = time.perf_counter()
  for _ in range(num_batches):
    example = next(iterator)
  seconds = time.perf_counter() - start
  assert example['image'].shape == (batch, *ZEROWASTE['crop_size'], 3)
  return {'images_per_s': batch * num_batches / seconds, 'batch': batch,
          'worker_count': worker_count, 'frame_size': list(frame_size),
          'crop_size': list(ZEROWASTE['crop_size']), 'seconds': seconds,
          'images': batch * num_batches}
