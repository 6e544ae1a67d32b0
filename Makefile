# make demo   quick end-to-end: meta-train on quadratics, compare with tuned baselines
# make test   lint + the docs site (mkdocs --strict) + the test suite
# make bench  the long quality and speed benchmarks (writes benchmarks/<experiment>/results/)

PYTHON ?= python3
# The CPU build pinned here installs fast on our machines; on a GPU machine use e.g.
# `make test TORCH="torch>=2.2"` (or install torch into .venv first: it is kept).
TORCH ?= torch==2.13.0
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

.PHONY: venv demo test bench lint docs
venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/l2o demo --out demo-output --force

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples
	$(VENV)/bin/ruff format --check src tests benchmarks examples

test: lint docs
	$(PY) -m pytest tests

docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict --quiet --site-dir $(VENV)/site

bench: $(STAMP)
	$(PY) -m benchmarks.quadratic.run
	$(PY) -m benchmarks.quadratic.run --config configs/quadratic-paper.toml --name quadratic-paper
	$(PY) -m benchmarks.mnist.run
	$(PY) -m benchmarks.conv.run
	$(PY) -m benchmarks.tools.headroom --config configs/conv.toml --name conv-headroom
	$(PY) -m benchmarks.speed.run
