"""kzoo's benchmark suite: `python -m benchmarks [--quick]` (or `make bench`).

Each benchmark measures kzoo and a hand-written Keras baseline in the same process, alternating
their order, excluding warm-up, and reports the median of repeats and their ratio.
"""
