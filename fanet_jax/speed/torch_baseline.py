"""The PyTorch side of `python -m fanet_jax.speed.benchmark`: the reference, timed the same way.

Runs `fanet_jax/pytorch/reference.py` (the independent PyTorch implementation the
parity tests use) on the same shapes as a JAX case, in its own process: eager
PyTorch on the CPU, float32, one thread per available core, denormals flushed
(as XLA:CPU does; without it the reference slows down several-fold once the loss
is small), random inputs and labels like the JAX case, the allocator's free pages
handed back before timing as on the JAX side (`allocator.release_free_memory`).
Inference runs under
`torch.inference_mode()`; a training step is forward (train mode: stochastic depth,
BatchNorm batch statistics, Dropout2d, auxiliary head), cross-entropy + 0.5 x the
auxiliary loss, backward and `torch.optim.AdamW`.
"""
import os
import resource
import statistics
import time

# Models the reference implements, by factory name.
MODELS = ('fanet_tiny_upernet', 'fanet_tiny_classifier')


def run_case(model_name: str, batch: int, size: tuple[int, int], train: bool,
             repeats: int, num_classes: int = 5) -> dict:
  """Times the reference on one case; the first run is a warm-up.

  Args:
    model_name: one of MODELS.
    batch: batch size.
    size: (H, W).
    train: a training step instead of inference.
    repeats: timed runs after the warm-up.
    num_classes: classes of the segmentor (labels are drawn below it).

  Returns:
    {'median_s', 'times_s', 'images_per_s', 'peak_rss_gb', 'threads', 'version'}.
  """
  import torch  # pylint: disable=import-outside-toplevel

  from fanet_jax.pytorch import reference as ref  # pylint: disable=import-outside-toplevel

  if model_name not in MODELS:
    raise ValueError(f'no PyTorch reference for {model_name!r}; have {MODELS}')
  threads = len(os.sched_getaffinity(0))
  torch.set_num_threads(threads)
  torch.set_flush_denormal(True)
  torch.manual_seed(0)
  if model_name == 'fanet_tiny_upernet':
    model = ref.EncoderDecoder(num_classes=num_classes)
  else:
    model = ref.FANet(num_classes=1000)
  images = torch.randn(batch, 3, *size)
  if train:
    model.train()
    optimizer = ref.make_optimizer(model, lr=1e-4, weight_decay=1e-3)
    labels = torch.randint(0, num_classes, (batch, *size))
    step = lambda: ref.train_step(model, optimizer, images, labels)
  else:
    model.eval()

    def step():
      with torch.inference_mode():
        return model(images)
  from fanet_jax.runtime import allocator  # pylint: disable=import-outside-toplevel
  allocator.release_free_memory()
  times = []
  for i in range(repeats + 1):
    start = time.perf_counter()
    step()
    if i:
      times.append(time.perf_counter() - start)
  median = statistics.median(times)
  return {'median_s': median, 'times_s': times, 'images_per_s': batch / median,
          'peak_rss_gb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
          'threads': threads, 'version': torch.__version__}
