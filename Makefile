# Two commands on a fresh machine: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench gpu-check docs clean hub tracking

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Re-installs only when pyproject.toml changes (editable install: sources are live).
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

# The optional `hub` extra (KerasHub backbones): `make hub` once, then `make test` runs tests/test_hub.py.
# keras-hub -> tensorflow-text -> the full `tensorflow` wheel, which overwrites tensorflow-cpu's files
# in the shared `tensorflow/` folder with its CUDA build (CUDA warnings on every import on a machine
# without a GPU); reinstalling tensorflow-cpu's own files, same version, puts the CPU build back.
HUB_STAMP := $(VENV)/.hub-installed
$(HUB_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[dev,hub]'
	if $(BIN)/python -m pip show -q tensorflow-cpu 2>/dev/null; then \
		$(BIN)/python -m pip install -q --force-reinstall --no-deps \
			"tensorflow-cpu==$$($(BIN)/python -m pip show tensorflow-cpu | sed -n 's/^Version: //p')"; fi
	touch $(HUB_STAMP)

hub: $(HUB_STAMP)

# The optional `tracking` extra (MLflow): `make tracking` once, then `make test` runs tests/test_tracking.py.
TRACKING_STAMP := $(VENV)/.tracking-installed
$(TRACKING_STAMP): pyproject.toml $(STAMP)
	$(BIN)/python -m pip install -q -e '.[dev,tracking]'
	touch $(TRACKING_STAMP)

tracking: $(TRACKING_STAMP)

run: $(STAMP)
	$(BIN)/kzoo run mlp-digits

# Two worker processes, each test file kept in one of them (its module fixtures train once):
# 7 min 40 s instead of 12 min 49 s on a 2-core Intel Xeon. TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=15 -n $(TEST_WORKERS) --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python -m benchmarks --quick

# On a machine with an NVIDIA GPU: installs the `gpu` extra, then mixed precision, XLA, MirroredStrategy,
# ResNet-20 throughput, staged fine-tuning and a two-trial search (benchmarks/results-gpu.*, < 8 min).
# `make gpu-check ARGS=--cpu` rehearses the same steps on the CPU.
gpu-check: $(STAMP)
	$(BIN)/python -m benchmarks.gpu_check $(ARGS)

# The docs extra gets its own stamp, so `make test` never needs mkdocs.
DOCS_STAMP := $(VENV)/.docs-installed
$(DOCS_STAMP): pyproject.toml $(STAMP)
	$(BIN)/python -m pip install -q -e '.[dev,docs]'
	touch $(DOCS_STAMP)

# Generated blocks are rendered from their results files first; --strict fails on a broken link.
docs: $(DOCS_STAMP)
	$(BIN)/python -m benchmarks.results --render
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) runs build site *.egg-info
