"""Numbered progress lines for the export's steps, on stderr."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from e5rt.progress import proc_status_mb


class Steps:
    """Numbered step lines with elapsed time and memory: '[ 3] fp16: converting (t=4.1s, RSS 2.1 GB, peak 5.0 GB)'.

    The memory figures say which stage a large export's peak comes from (/proc; omitted where unreadable).
    """

    def __init__(self, total: int = 0, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.total = total
        self.n = 0
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.t0 = time.perf_counter()
        self._step_start = self.t0

    def step(self, message: str) -> None:
        self.n += 1
        self._step_start = time.perf_counter()
        if self.enabled:
            rss, peak = proc_status_mb("self", "VmRSS"), proc_status_mb("self", "VmHWM")
            mem = f", RSS {rss / 1e3:.1f} GB, peak {peak / 1e3:.1f} GB" if rss is not None and peak is not None else ""
            self.stream.write(f"[{self.n:2d}] {message} (t={self._step_start - self.t0:.1f}s{mem})\n")
            self.stream.flush()

    def note(self, message: str) -> None:
        if self.enabled:
            self.stream.write(f"      {message}\n")
            self.stream.flush()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0
