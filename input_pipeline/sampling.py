"""Which examples each JAX process reads, and in which order.

Training: a grain `DataLoader` over `GlobalOrderSampler`, so that global batches do
not depend on the number of processes and the loader's iterator state resumes a run
exactly. Evaluation: contiguous shards (`eval_shard`), every process yielding the
same number of batches.
"""
import sys

from absl import flags
import grain.python as grain
import jax

# grain's default (16 threads reading 500 examples ahead) holds gigabytes of decoded
# 1080p frames per process and starved the transforms on 2 cores (docs/performance.md,
# grain read options). Two threads still
# overlap PNG decoding (PIL releases the GIL) with transforms.
DEFAULT_READ_OPTIONS = grain.ReadOptions(num_threads=2, prefetch_buffer_size=8)


def per_process_shard():
  """Returns (shard_index, shard_count) for this JAX process: one shard per process."""
  return jax.process_index(), jax.process_count()


class GlobalOrderSampler:
  """Makes every process's share of a global batch independent of the process count.

  grain's DataLoader gives process p of P the sampler indices p, p + P, p + 2P, ...
  and batches them in order; `make_array_from_process_local_data` then stacks the
  processes' batches. This sampler maps those indices so that global batch k holds
  positions [k * B, (k + 1) * B) of one shuffled order of the whole data set, in
  that order (process p gets rows [p * b, (p + 1) * b) of it, b = B / P), and every
  example's random augmentation is drawn from its global position. One process or
  many, one device or many: a run sees exactly the same batches.

  Args:
    num_records: examples in the source.
    local_batch_size: examples per batch of one process (b).
    shard_index: this process (p).
    shard_count: number of processes (P).
    seed: shuffle and augmentation seed.
    num_epochs: epochs to read; None repeats forever.
  """

  def __init__(self, num_records: int, *, local_batch_size: int, shard_index: int,
               shard_count: int, seed: int, num_epochs=None):
    self._inner = grain.IndexSampler(num_records=num_records, shuffle=True,
                                     num_epochs=num_epochs, seed=seed)
    self._local_batch = local_batch_size
    self._shard_index = shard_index
    self._shard_count = shard_count
    # Whole global batches only: positions past the last full one are not read.
    global_batch = local_batch_size * shard_count
    self._length = (sys.maxsize if num_epochs is None else
                    num_epochs * num_records // global_batch * global_batch)

  def __len__(self) -> int:
    return self._length

  def __repr__(self) -> str:  # grain validates a restored state against this.
    return (f'GlobalOrderSampler({self._inner!r}, local_batch_size={self._local_batch}, '
            f'shard_index={self._shard_index}, shard_count={self._shard_count})')

  def __getitem__(self, index: int) -> grain.RecordMetadata:
    if index < 0 or index >= self._length:
      raise IndexError(f'sampler index {index} out of [0, {self._length})')
    local, process = divmod(index, self._shard_count)
    batch, row = divmod(local, self._local_batch)
    position = (batch * self._shard_count + process) * self._local_batch + row
    metadata = self._inner[position]
    return grain.RecordMetadata(index=index, record_key=metadata.record_key,
                                rng=metadata.rng)


def grain_loader(source, ops, *, batch_size, seed, shard_index, shard_count,
                  worker_count, num_epochs, read_options):
  """A per-epoch shuffled grain DataLoader batching the output of `ops`, whose global
  batches do not depend on the number of processes (see `GlobalOrderSampler`)."""
  shard_options = grain.ShardOptions(shard_index, shard_count, drop_remainder=True)
  sampler = GlobalOrderSampler(len(source), local_batch_size=batch_size,
                               shard_index=shard_index, shard_count=shard_count,
                               seed=seed, num_epochs=num_epochs)
  ops = list(ops) + [grain.Batch(batch_size, drop_remainder=True)]
  if worker_count > 0 and not flags.FLAGS.is_parsed():
    # grain's worker processes read absl flags, which fail if never parsed (tests,
    # notebooks, launchers that do not use absl.app).
    flags.FLAGS.mark_as_parsed()
  return grain.DataLoader(data_source=source, sampler=sampler, operations=ops,
                          worker_count=worker_count, shard_options=shard_options,
                          read_options=read_options or DEFAULT_READ_OPTIONS)


def eval_shard(num_examples, batch_size, shard_index, shard_count):
  """Splits evaluation over shards: shard i reads [i * n // k, (i + 1) * n // k).

  Returns:
    (this shard's indices, the batch count of the longest shard, which every shard
    must yield to keep the processes in step).
  """
  bounds = [i * num_examples // shard_count for i in range(shard_count + 1)]
  num_batches = max(-(-(end - start) // batch_size)
                    for start, end in zip(bounds, bounds[1:]))
  return range(bounds[shard_index], bounds[shard_index + 1]), num_batches
