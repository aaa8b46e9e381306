"""Process settings applied before a run allocates: XLA:CPU flags and the allocator."""
