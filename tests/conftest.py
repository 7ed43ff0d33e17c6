from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

# pytest-xdist runs one worker per core: more torch threads per worker oversubscribe the
# CPU and slow 3D convolutions down by 10x or more.
torch.set_num_threads(1)

# --precision auto runs bf16 on CPUs with native bf16: tests compare against fp32 references and must not
# depend on the CI machine's CPU, so auto means fp32 here (subprocesses inherit it); tests/test_precision.py
# runs bf16 explicitly and switches this off to check the detection.
os.environ.setdefault("RTSEG_CPU_BF16", "0")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SEED_CONFIGS = SHARED / "seed" / "configs"
DATA = SHARED / "data"
sys.path.insert(0, str(Path(__file__).resolve().parent))

from dicom_syntaxes import syntax_set  # noqa: E402,F401  (session fixture: the shared series in every transfer syntax)


@pytest.fixture
def seed_configs() -> list[Path]:
    if not SEED_CONFIGS.is_dir():
        pytest.skip(f"seed configs not found at {SEED_CONFIGS} (../shared is absent)")
    return sorted(SEED_CONFIGS.glob("*.yml"))


@pytest.fixture
def shared_data() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"real data not found at {DATA} (../shared/data is absent)")
    return DATA
