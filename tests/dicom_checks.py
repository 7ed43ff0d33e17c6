"""dciodvfy (dicom3tools) on every RTSTRUCT the suite writes."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path


def assert_dciodvfy_clean(path: Path) -> None:
    """No 'Error' lines from dciodvfy. Where the tool is absent: a no-op locally, a failure in CI
    (.ci/run installs dicom3tools)."""
    tool = shutil.which("dciodvfy")
    if tool is None:
        assert os.environ.get("CI") != "true", "dciodvfy (Debian package dicom3tools) must be installed in CI"
        return
    res = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60)
    errors = [ln for ln in (res.stdout + res.stderr).splitlines() if ln.startswith("Error")]
    assert errors == [], f"dciodvfy {path}: {errors}"
