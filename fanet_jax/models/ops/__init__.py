"""Convolution and resize formulations that XLA compiles well on a CPU.

Each computes exactly what a textbook layer computes (`lax` formulation kept as the
reference); docs/performance.md records why each exists.
"""
