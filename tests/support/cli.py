"""Run the real `e5rt` console script of this environment as a subprocess."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

E5RT = shutil.which("e5rt", path=str(Path(sys.executable).parent)) or shutil.which("e5rt")


def run(
    *args: str, stdin: str | None = None, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    assert E5RT, "the e5rt console script is not installed (pip install -e .)"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    proc = subprocess.run([E5RT, *args], input=stdin, capture_output=True, text=True, timeout=300, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"e5rt {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc
