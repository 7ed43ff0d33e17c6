"""``rtseg.device.retain_freed_memory``: a freed large tensor's pages are reused by the next one, so filling
the new one costs no page faults (the reason a CPU prediction got ~20 % cheaper); ``RTSEG_RETAIN_MEMORY=0`` opts out."""
from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="mallopt is glibc's; elsewhere rtseg leaves malloc alone")

PROBE = """
import resource, torch
from rtseg.device import retain_freed_memory
applied = retain_freed_memory()
t = torch.empty(64 * 2**20 // 4, dtype=torch.float32)
t.fill_(1.0)  # touched once
del t
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
t = torch.empty(48 * 2**20 // 4, dtype=torch.float32)  # fits in the freed block (an equal size may not: alignment)
t.fill_(1.0)
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def probe(retain: str) -> tuple[bool, int]:
    env = dict(os.environ, RTSEG_RETAIN_MEMORY=retain, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, check=True)
    applied, faults = out.stdout.split()
    return applied == "True", int(faults)


def test_a_tensor_in_freed_memory_is_filled_without_page_faults() -> None:
    applied, faults = probe("1")
    assert applied and faults < 100, faults  # 48 MiB is 12288 pages of 4 KiB
    applied, faults = probe("0")
    assert not applied and faults > 12000, faults  # malloc's own way: a fresh mmap, every page faults again
