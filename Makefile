VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_VERSION ?= 2.13.0

.PHONY: setup test test-fast demo bench clean gpu-wheels gpu-wheels-nnunet gpu-data gpu-data-nnunet gpu-dry-run nnunet-venv

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

# --- the prepared GPU check (benchmarks/gpu_check.sh; docs/PERFORMANCE.md "GPU check") ---
# Wheels the lent GPU machine lacks (Python 3.12, manylinux x86_64), into the ignored .whl/.
GPU_PIP_DOWNLOAD := python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
	--implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
	--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64

gpu-wheels:
	rm -rf .whl && mkdir -p .whl
	$(GPU_PIP_DOWNLOAD) -d .whl -r benchmarks/gpu_wheels.txt
	python3 benchmarks/gpu_data.py --size-only

# nnU-Net's wheels for a device call of its own (too big to travel beside .whl and all of .gpudata).
gpu-wheels-nnunet:
	rm -rf .whl-nnunet && mkdir -p .whl-nnunet
	$(GPU_PIP_DOWNLOAD) -d .whl-nnunet -r benchmarks/gpu_wheels_nnunet.txt
	python3 -m pip wheel -q --no-deps -w .whl-nnunet -r benchmarks/gpu_wheels_nnunet_sdist.txt
	python3 benchmarks/wheel_lzma.py .whl-nnunet --over 4
	python3 benchmarks/gpu_data.py --size-only --carry .whl .whl-nnunet .gpudata-nnunet

# OpenKBP cases that travel with the repo (the GPU machine has no ../shared): 80 train + 34 val.
GPU_TRAIN_CASES ?= 80
GPU_VAL_CASES ?= 34
gpu-data:
	python3 benchmarks/gpu_data.py --train $(GPU_TRAIN_CASES) --val $(GPU_VAL_CASES)

# Fewer cases for the nnU-Net call, so that they fit beside .whl and .whl-nnunet: 30 train + 8 val.
gpu-data-nnunet:
	python3 benchmarks/gpu_data.py --train 30 --val 8 --out .gpudata-nnunet/openkbp --carry .whl .whl-nnunet .gpudata-nnunet

gpu-dry-run: setup
	OMP_NUM_THREADS=1 PYTHON=$(PY) bash benchmarks/gpu_check.sh runs/gpu_check_dry/out --dry-run

# nnU-Net v2 for benchmarks/vs_nnunet.py: its own venv (it pins another torch than the project's).
NNUNET_VENV ?= .venv-nnunet
$(NNUNET_VENV)/.installed:
	python3 -m venv $(NNUNET_VENV)
	$(NNUNET_VENV)/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1 nnunetv2==2.8.1
	touch $@

nnunet-venv: $(NNUNET_VENV)/.installed
