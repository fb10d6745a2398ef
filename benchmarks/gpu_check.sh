#!/usr/bin/env bash
# One command on a machine with an NVIDIA GPU: `benchmarks/gpu_check.sh` (or `--cpu` to rehearse).
# Creates the virtual environment if needed, then runs `python -m benchmarks.gpu_check`.
set -euo pipefail
cd "$(dirname "$0")/.."
make -s .venv/.installed
exec .venv/bin/python -m benchmarks.gpu_check "$@"
