"""The serving memory bound with OpenAI-sized requests.

`e5rt serve` at its default limits (2,048 inputs per request, 4,096 texts queued or running) is filled to its
bound with 2,048-text requests of full-length texts (every text cut to max_length tokens), then one more such
request (it must get 429, not 413), then the clients hang up (their queued texts are dropped). Records the
server's RSS idle, with the queue full, and its peak (VmHWM), plus the queue depth /metrics reported.

    python benchmarks/serve_memory_bound.py MODEL_DIR [--threads 2] [--variant fp32] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from e5rt.bench.corpus import DEFAULT_CORPUS, load_corpus  # noqa: E402
from e5rt.bench.report import machine  # noqa: E402
from e5rt.core.tokenize import TextTokenizer  # noqa: E402
from e5rt.manifest import load_manifest  # noqa: E402
from e5rt.progress import proc_status_mb  # noqa: E402

REQUEST_TEXTS = 2048


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def metric(url: str, name: str) -> float:
    text = httpx.get(url + "/metrics", timeout=10).text
    found = re.search(rf"^{name} ([0-9.e+]+)$", text, re.M)
    return float(found.group(1)) if found else float("nan")


def open_request(port: int, body: bytes) -> socket.socket:
    """Send one POST and leave the answer unread (the socket is closed later: the client hangs up)."""
    sock = socket.create_connection(("127.0.0.1", port))
    head = (
        f"POST /v1/embeddings HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode()
    sock.sendall(head + body)
    return sock


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variant", default="fp32")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    e5rt_bin = shutil.which("e5rt", path=str(Path(sys.executable).parent)) or "e5rt"
    cmd = [e5rt_bin, "serve", str(args.model_dir), "--port", str(port), "--threads", str(args.threads)]
    cmd += ["--variant", args.variant, "--provider", "cpu", "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out: dict[str, Any] = {"machine": machine(), "model": str(args.model_dir), "cmd": " ".join(cmd)}
    socks: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        info = httpx.get(url + "/info", timeout=10).json()
        limits = info["limits"]
        out["limits"] = limits
        out["rss_idle_mb"] = round(proc_status_mb(proc.pid) or 0.0, 1)
        corpus, _ = load_corpus(DEFAULT_CORPUS, 256)
        tokenizer = TextTokenizer(args.model_dir / load_manifest(args.model_dir).tokenizer, 1 << 20)
        # Each text over max_length tokens: every queued text costs the most a text can.
        long = []
        for i in range(64):  # corpus texts joined until each is just over max_length tokens
            parts, j = [], i
            while tokenizer.count_tokens([" ".join(parts)])[0] <= info["max_length"]:
                parts.append(corpus[j % len(corpus)])
                j += 7
            long.append(" ".join(parts))
        texts = [long[i % len(long)] for i in range(REQUEST_TEXTS)]
        body = json.dumps({"input": texts, "model": "x"}).encode()
        out["request"] = {
            "texts": REQUEST_TEXTS,
            "bytes": len(body),
            "max_length": info["max_length"],
            "min_tokens_per_text_before_truncation": min(tokenizer.count_tokens(long)),
        }
        bound = limits["max_concurrent_requests"] // REQUEST_TEXTS
        t0 = time.monotonic()
        socks = [open_request(port, body) for _ in range(bound)]
        depth, rss_full = 0.0, 0.0
        # Until the last request is queued: then the queue holds (nearly) its bound of full-length texts.
        while time.monotonic() - t0 < 120 and depth <= (bound - 1) * REQUEST_TEXTS:
            depth = max(depth, metric(url, "e5rt_queue_texts"))
            rss_full = max(rss_full, proc_status_mb(proc.pid) or 0.0)
            time.sleep(0.05)
        out["seconds_to_fill"] = round(time.monotonic() - t0, 1)
        out["queued_texts_max"] = depth
        out["queued_tokens"] = metric(url, "e5rt_queue_tokens")
        out["rss_queue_full_mb"] = round(max(rss_full, proc_status_mb(proc.pid) or 0.0), 1)
        extra = httpx.post(
            url + "/v1/embeddings", content=body, headers={"content-type": "application/json"}, timeout=120
        )
        out["one_more_request"] = {"status": extra.status_code, "retry_after": extra.headers.get("retry-after")}
        for s in socks:
            s.close()
        socks = []
        t1 = time.monotonic()
        while time.monotonic() - t1 < 120 and metric(url, "e5rt_queue_texts") > 0:
            time.sleep(0.2)
        out["dropped_texts"] = metric(url, "e5rt_dropped_texts_total")
        out["rss_after_mb"] = round(proc_status_mb(proc.pid) or 0.0, 1)
        out["peak_rss_mb"] = round(proc_status_mb(proc.pid, "VmHWM") or 0.0, 1)
        small = httpx.post(url + "/v1/embeddings", json={"input": ["hello"]}, timeout=60)
        out["after_small_request"] = small.status_code
    finally:
        for s in socks:
            s.close()
        proc.terminate()
        proc.wait(timeout=60)
    print(json.dumps(out, indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
