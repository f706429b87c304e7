"""Start `e5rt serve` as a subprocess on 127.0.0.1 and a free port; stop it by its own pid."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

from tests.support.cli import E5RT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(
        self, model: str | list[str], *args: str, env: dict[str, str] | None = None, wait: bool = True
    ) -> None:
        models = [model] if isinstance(model, str) else model  # several: one server, every directory served
        assert E5RT, "the e5rt console script is not installed (pip install -e .)"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = Path(os.environ.get("TMPDIR", "/tmp")) / f"e5rt-serve-{self.port}.log"
        self._log_fh = open(self.log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [E5RT, "serve", *models, "--host", "127.0.0.1", "--port", str(self.port), *args],
            stdout=self._log_fh,
            stderr=subprocess.STDOUT,
            env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
        )
        if wait:
            self.wait_healthy()

    def wait_healthy(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"e5rt serve exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(self.url + "/health", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"e5rt serve not healthy after {timeout} s:\n{self.output()}")

    def output(self) -> str:
        if not self._log_fh.closed:  # after stop() the log is complete and closed
            self._log_fh.flush()
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log_fh.close()
        return int(self.proc.returncode)
