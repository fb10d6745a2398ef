"""The training engine: every path (a run, staged fine-tuning, a tuner trial, multi-worker, the
learning-rate finder) prepares data, builds, compiles a stage and fits through this package."""
