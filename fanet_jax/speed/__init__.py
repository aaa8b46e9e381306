"""Speed tooling: `python -m fanet_jax.speed.benchmark` and its parts.

Timed cases of our programs and of the PyTorch reference, multiply-add counts, the
input pipeline's throughput and the HLO facts of the train step. Results go into
docs/performance.md with the command that produced them. `benchmark.py` is the
command line: it runs each case of `cases.py` in its own subprocess and prints the
table.
"""
