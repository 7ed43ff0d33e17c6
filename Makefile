VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_VERSION ?= 2.13.0

.PHONY: setup test test-fast demo bench clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==$(TORCH_VERSION)
	$(PIP) install -q -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

test: setup
	OMP_NUM_THREADS=1 $(PY) -m pytest -n 2 -q

test-fast: setup
	OMP_NUM_THREADS=1 $(PY) -m pytest -n 2 -q -m "not slow"

demo: setup
	$(VENV)/bin/rtseg demo --out demo_output

bench: setup
	$(PY) benchmarks/train_step.py
	$(PY) benchmarks/predict.py
	$(PY) benchmarks/metrics.py

clean:
	rm -rf $(VENV) demo_output runs build *.egg-info src/*.egg-info
