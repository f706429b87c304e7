"""Progress of long corpus runs on stderr (a redrawn line on a terminal, periodic plain lines in logs), and the
process's own memory figures."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}" if h else f"{rem // 60}:{rem % 60:02d}"


class Meter:
    """Progress of a long corpus run: texts/s, tokens/s and ETA from the share of the input consumed.

    On a terminal it redraws one line; otherwise (a log, a pipe, a batch job) it writes a plain line every
    `log_every` seconds and one at the end, so long runs stay observable without flooding the log.
    """

    def __init__(
        self,
        total: int | None,
        stream: TextIO | None = None,
        tty: bool | None = None,
        log_every: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.total, self.log_every, self.clock = total, log_every, clock
        self.start = clock()
        self._last = self.start
        self.base = 0  # input consumed before this run (a resume), left out of the rates

    def line(self, done: int, texts: int, tokens: int) -> str:
        elapsed = max(self.clock() - self.start, 1e-9)
        rate_t, rate_k = texts / elapsed, tokens / elapsed
        parts = [f"{texts:,} texts", f"{rate_t:,.1f} texts/s", f"{rate_k:,.0f} tokens/s"]
        if self.total:
            frac = min(done / self.total, 1.0)
            speed = (done - self.base) / elapsed
            eta = (self.total - done) / speed if speed > 0 else float("inf")
            parts.insert(0, f"{frac:6.1%}")
            parts.append("ETA " + (_clock(eta) if eta != float("inf") else "?"))
        parts.append(f"elapsed {_clock(elapsed)}")
        return " | ".join(parts)

    def __call__(self, done: int, texts: int, tokens: int, final: bool = False) -> None:
        now = self.clock()
        if self.tty:
            if final or now - self._last >= 0.1:
                self._last = now
                self.stream.write("\r" + self.line(done, texts, tokens) + ("\n" if final else ""))
                self.stream.flush()
        elif final or now - self._last >= self.log_every:
            self._last = now
            self.stream.write("e5rt embed: " + self.line(done, texts, tokens) + "\n")
            self.stream.flush()


def proc_status_mb(pid: int | str = "self", key: str = "VmRSS") -> float | None:
    """A memory field of /proc/PID/status in MB (VmRSS now, VmHWM peak), or None where it cannot be read.

    VmHWM is this process's own peak since exec: unlike getrusage's ru_maxrss, it does not start from the size of
    the parent it was forked from, so a small CLI run started by a big benchmark process reports its own peak.
    """
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None
