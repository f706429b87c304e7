"""A lone short query, served and in-process, side by side in one run; and where a short query's time goes.

    .venv/bin/python benchmarks/serve_latency.py models/me5-small-r --json benchmarks/results/serve-latency.json
    [--queries 300] [--gap-ms 5] [--tokens 12-20] [--e5rt-args "..."] [--library-threads N] [--profile-runs 200]
    .venv/bin/python benchmarks/serve_latency.py --render benchmarks/results/serve-latency.json   # the table

What it measures, all on the same queries (corpus queries whose prompted length is within --tokens):
  served     `e5rt serve MODEL` with the server's defaults (plus --e5rt-args), one client on one keep-alive
             connection sending one query per /v1/embeddings request, the next when the answer is in (c=1);
             the server's own timing headers split each request into tokenize / queue / inference / the rest
  library    Embedder.load(MODEL) with the library's defaults (the same variant; --library-threads), encode([q])
  session    the library's ONNX Runtime session alone on the same ids: what the model costs in this process
The three take turns query by query (served, library, session; the next query in the other order), each after
a short pause, so a drift of the machine's speed falls on all of them alike; the overhead is also given as the
median of the per-query differences (served - library), which that drift cancels out of. Every served vector
is compared with the library's.

Also: the server's CPU time per query and while idle (what spinning threads would cost), and the per-op
profile of one 1xN query (ONNX Runtime's profiler) with the floating-point work it does and the time that work
takes at the rate the same session reaches on a large batch (the limit estimate for that shape).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from serve_load import free_port, wait_healthy  # noqa: E402

from e5rt import Embedder  # noqa: E402
from e5rt.bench.corpus import read_rows  # noqa: E402
from e5rt.bench.report import machine  # noqa: E402
from e5rt.core.feeds import build_feeds  # noqa: E402

PY = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- inputs -----------------------------------------------------------------------------------------------------
def pick_queries(model: Embedder, n: int, lo: int, hi: int) -> tuple[list[str], list[int]]:
    """n corpus queries (cycled) whose prompted token count lies in [lo, hi], and those counts."""
    texts = [r["text"] for r in read_rows() if r.get("kind") == "query"]
    enc, _ = model.tokenize(texts, "query")
    fit = [(t, len(ids)) for t, ids in zip(texts, enc.ids, strict=True) if lo <= len(ids) <= hi]
    if not fit:
        raise SystemExit(f"no corpus query has {lo}-{hi} tokens")
    picked = [fit[i % len(fit)] for i in range(n)]
    return [t for t, _ in picked], [k for _, k in picked]


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000.0
    return {
        "n": len(seconds),
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p90_ms": round(float(np.percentile(ms, 90)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "mean_ms": round(float(ms.mean()), 3),
    }


# --- the three ways ---------------------------------------------------------------------------------------------
class Client:
    """A lean blocking HTTP/1.1 keep-alive client: a lone query's latency should hold the server's costs, not
    a client library's (http.client parses every answer's headers with the email package)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
        if body:
            head += "Content-Type: application/json\r\n"
        self.sock.sendall(head.encode() + b"\r\n" + body)
        while b"\r\n\r\n" not in self.buf:
            self._recv()
        raw_head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        status_line, *lines = raw_head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        length = int(headers["content-length"])
        while len(self.buf) < length:
            self._recv()
        data, self.buf = self.buf[:length], self.buf[length:]
        return int(status_line.split()[1]), headers, data

    def _recv(self) -> None:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buf += chunk

    def close(self) -> None:
        self.sock.close()


class Served:
    """One e5rt server subprocess and one keep-alive connection to it."""

    def __init__(self, model: Path, extra: list[str]) -> None:
        self.port = free_port()
        e5rt_bin = shutil.which("e5rt", path=str(Path(PY).parent)) or "e5rt"
        self.cmd = [e5rt_bin, "serve", str(model), "--port", str(self.port), *extra]
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_healthy(self.proc, self.port, "/health", timeout=300.0)
        self.client = Client(self.port)
        status, _, raw = self.client.request("GET", "/info")
        self.info = json.loads(raw)
        self.parts: dict[str, list[float]] = defaultdict(list)

    def query(self, text: str) -> tuple[float, np.ndarray]:
        body = json.dumps({"input": [text], "model": "m", "input_type": "query"}).encode()
        t0 = time.perf_counter()
        status, headers, raw = self.client.request("POST", "/v1/embeddings", body)
        seconds = time.perf_counter() - t0
        if status != 200:
            raise RuntimeError(f"server answered {status}: {raw[:200]!r}")
        total = float(headers.get("x-e5rt-total-ms", "nan"))
        for part in ("tokenize", "queue", "inference"):
            self.parts[part].append(float(headers.get(f"x-e5rt-{part}-ms", "nan")))
        self.parts["server_total"].append(total)
        self.parts["outside_server"].append(seconds * 1000.0 - total)
        return seconds, np.asarray(json.loads(raw)["data"][0]["embedding"], dtype=np.float32)

    def cpu_s(self) -> float:
        """The server process's CPU time (user + system, every thread) so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def stop(self) -> None:
        self.client.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def session_time(model: Embedder, ids: np.ndarray) -> float:
    """One run of the model's session on one text's ids (feeds built outside the timing)."""
    backend = model.backend
    feeds = build_feeds([ids], len(ids), model.pool_spec.pad_id, backend.input_names, backend.input_types)
    t0 = time.perf_counter()
    backend.run(feeds)
    return time.perf_counter() - t0


# --- the profile ------------------------------------------------------------------------------------------------
def matmul_macs_per_token(graph: Path) -> int:
    """Multiply-adds per token of the graph's weight matrix products: MatMul and its quantized forms, and the
    fused Q/K/V projection of Attention / QAttention, whose weights are a rank-2 initializer (directly, or
    through the DequantizeLinear of a QDQ graph); attention's own products are added by the caller."""
    import onnx

    proto = onnx.load(str(graph), load_external_data=False)
    shapes = {init.name: tuple(init.dims) for init in proto.graph.initializer}
    producer = {out: node for node in proto.graph.node for out in node.output}

    def weight_dims(name: str) -> tuple[int, ...] | None:
        while name not in shapes and name in producer and producer[name].op_type in ("DequantizeLinear", "Cast"):
            name = producer[name].input[0]
        return shapes.get(name)

    ops = ("MatMul", "MatMulInteger", "QLinearMatMul", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "FusedMatMul")
    total = 0
    for node in proto.graph.node:
        if node.op_type in ops or node.op_type in ("Attention", "QAttention"):
            for name in node.input[1:3]:
                dims = weight_dims(name)
                if dims is not None and len(dims) == 2 and min(dims) > 1:
                    total += dims[0] * dims[1]
                    break
    return total


def profile(model: Embedder, ids: np.ndarray, runs: int) -> dict[str, Any]:
    """Per op type: ms per run of one 1xN query, through ONNX Runtime's profiler on a session like the
    library's (its graph and thread count)."""
    import onnxruntime as ort

    backend = model.backend
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if backend.threads:
        so.intra_op_num_threads = backend.threads
    so.inter_op_num_threads = 1
    if backend.exact_int8:
        so.add_session_config_entry("session.x64quantprecision", "1")
    prefix = Path(tempfile.mkdtemp(prefix="e5rt-profile-")) / "p"
    so.enable_profiling = True
    so.profile_file_prefix = str(prefix)
    session = ort.InferenceSession(str(backend.model_path), sess_options=so, providers=["CPUExecutionProvider"])
    feeds = build_feeds([ids], len(ids), model.pool_spec.pad_id, backend.input_names, backend.input_types)
    for _ in range(20):
        session.run(None, feeds)
    t0 = time.perf_counter()
    for _ in range(runs):
        session.run(None, feeds)
    wall = (time.perf_counter() - t0) / runs
    path = session.end_profiling()
    events = json.loads(Path(path).read_text())
    shutil.rmtree(prefix.parent, ignore_errors=True)
    per_op: dict[str, list[float]] = defaultdict(list)  # each kernel's ms, by op type
    model_runs = [e for e in events if e.get("name") == "model_run"]
    counted = len(model_runs)
    for event in events:
        if event.get("cat") == "Node" and str(event.get("name", "")).endswith("_kernel_time"):
            per_op[event["args"].get("op_name", "?")].append(event["dur"] / 1000.0)
    per_run = {op: sum(ms) / counted for op, ms in per_op.items()}
    kernels = sum(per_run.values())
    run_ms = sum(e["dur"] for e in model_runs) / 1000.0 / counted
    return {
        "tokens": int(len(ids)),
        "runs_profiled": counted,
        "wall_ms_per_run_profiling_on": round(wall * 1000.0, 3),
        "model_run_ms": round(run_ms, 3),
        "kernels_ms": round(kernels, 3),
        "outside_kernels_ms": round(run_ms - kernels, 3),
        # how many kernels a run launches, and each one's median: for tiny tensors that is the per-kernel cost
        "kernels_per_run": round(sum(len(ms) for ms in per_op.values()) / counted, 1),
        "ops": {
            op: {
                "ms": round(ms, 4),
                "share": round(ms / kernels, 4),
                "per_run": round(len(per_op[op]) / counted, 1),
                "median_us": round(float(np.median(per_op[op])) * 1000.0, 1),
            }
            for op, ms in sorted(per_run.items(), key=lambda kv: -kv[1])
        },
    }


def limit_estimate(model: Embedder, tokens: int, large: tuple[int, int]) -> dict[str, Any]:
    """The floating-point work of a 1 x tokens query and the time it takes at the rate (GFLOP/s) this
    session reaches on a large batch of `large` (texts, tokens each): what the shape would cost if one short
    query used the cores as well as bulk work does."""
    backend = model.backend
    macs = matmul_macs_per_token(backend.model_path)
    hidden = backend.hidden_size or model.dim
    layers = _layers(backend.model_path) or 1

    def flops(n: int, length: int) -> float:
        # weight products, plus attention's QK^T and AV (2 x L^2 x hidden per layer)
        return 2.0 * n * length * macs + 2.0 * 2.0 * n * length * length * hidden * layers

    n, length = large
    rng = np.random.default_rng(0)
    ids = [rng.integers(5, 1000, size=length) for _ in range(n)]
    feeds = build_feeds(ids, length, model.pool_spec.pad_id, backend.input_names, backend.input_types)
    backend.run(feeds)
    best = min(_timed(backend, feeds) for _ in range(3))
    rate = flops(n, length) / best
    one = flops(1, tokens)
    return {
        "macs_per_token": macs,
        "layers": layers,
        "query_gflop": round(one / 1e9, 4),
        "large_batch": [n, length],
        "large_batch_gflops": round(rate / 1e9, 2),
        "limit_ms": round(one / rate * 1000.0, 3),
    }


def _layers(graph: Path) -> int:
    import onnx

    proto = onnx.load(str(graph), load_external_data=False)
    fused = ("Attention", "MultiHeadAttention", "QAttention")
    count = sum(1 for node in proto.graph.node if node.op_type in fused)
    if count:
        return count
    return sum(1 for node in proto.graph.node if node.op_type == "Softmax")


def _timed(backend: Any, feeds: dict[str, np.ndarray]) -> float:
    t0 = time.perf_counter()
    backend.run(feeds)
    return time.perf_counter() - t0


# --- the run ----------------------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict[str, Any]:
    model_dir = Path(args.model)
    lo, _, hi = args.tokens.partition("-")
    extra = shlex.split(args.e5rt_args)
    overrides: dict[str, Any] = {}
    if args.library_threads:
        overrides["threads"] = args.library_threads
    library = Embedder.load(model_dir, **overrides)
    texts, lengths = pick_queries(library, args.queries, int(lo), int(hi or lo))
    enc, _ = library.tokenize(texts, "query")
    served = Served(model_dir, extra)
    try:
        info = served.info
        if info["variant"] != library.variant:
            raise SystemExit(f"the server runs {info['variant']}, the library {library.variant}: not comparable")
        print(
            f"model {model_dir.name}: variant {library.variant}, {len(texts)} queries of {min(lengths)}-"
            f"{max(lengths)} tokens (median {int(np.median(lengths))}); server {info['workers']} workers x "
            f"{info['threads_per_worker']} threads, args {extra or 'defaults'}; library threads "
            f"{library.backend.threads or os.cpu_count()}",
            flush=True,
        )
        for text in texts[:30]:  # warm both (arena, packed weights, the server's wide session)
            served.query(text)
            library.encode([text], "query")
        served.parts.clear()
        times: dict[str, list[float]] = {"served": [], "library": [], "session": []}
        vectors: dict[int, np.ndarray] = {}
        cpu_busy = 0.0
        orders = (("served", "library", "session"), ("session", "library", "served"))
        for i, text in enumerate(texts):
            for way in orders[i % 2]:
                time.sleep(args.gap_ms / 1000.0)  # the last way's threads stop spinning
                if way == "served":
                    c0 = served.cpu_s()
                    seconds, vectors[i] = served.query(text)
                    cpu_busy += served.cpu_s() - c0
                elif way == "library":
                    t0 = time.perf_counter()
                    library.encode([text], "query")
                    seconds = time.perf_counter() - t0
                else:
                    seconds = session_time(library, enc.ids[i])
                times[way].append(seconds)
        idle0 = served.cpu_s()
        time.sleep(args.idle_s)
        idle_cpu = served.cpu_s() - idle0
        parts = {k: round(float(np.median(v)), 3) for k, v in served.parts.items()}
        # compared after the timing: a library call between served queries would leave its threads spinning
        worst = max(float(np.abs(v - library.encode([texts[i]], "query")[0]).max()) for i, v in vectors.items())
    finally:
        served.stop()
    result: dict[str, Any] = {
        "model": model_dir.name,
        "variant": library.variant,
        "server_args": extra,
        "server": {"workers": info["workers"], "threads_per_worker": info["threads_per_worker"]},
        "library_threads": library.backend.threads or os.cpu_count(),
        "queries": len(texts),
        "tokens": {"min": min(lengths), "median": int(np.median(lengths)), "max": max(lengths)},
        "gap_ms": args.gap_ms,
        "served": percentiles(times["served"]),
        "library": percentiles(times["library"]),
        "session": percentiles(times["session"]),
        "served_parts_median_ms": parts,
        "served_max_abs_diff_vs_library": worst,
        "server_cpu_ms_per_query": round(cpu_busy / len(texts) * 1000.0, 3),
        "server_idle_cpu_percent": round(idle_cpu / args.idle_s * 100.0, 2),
    }
    result["overhead_ms"] = {
        q: round(result["served"][f"{q}_ms"] - result["library"][f"{q}_ms"], 3) for q in ("p50", "p90", "p99")
    }
    paired = (np.asarray(times["served"]) - np.asarray(times["library"])) * 1000.0
    result["overhead_ms"]["median_of_pairs"] = round(float(np.median(paired)), 3)
    if args.profile_runs:
        ids = enc.ids[int(np.argsort(lengths)[len(lengths) // 2])]
        result["profile"] = profile(library, ids, args.profile_runs)
        result["limit"] = limit_estimate(library, len(ids), (16, 128))
    return result


def render(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"CPU: {m['cpu']} ({m['cores']} cores; flags: {', '.join(m['flags']) or 'none of the int8 ones'})",
        "",
        "| model | variant | server | way | p50 ms | p90 ms | p99 ms |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    for r in report["results"]:
        server = f"{r['server']['workers']}x{r['server']['threads_per_worker']} {' '.join(r['server_args'])}".strip()
        for way in ("served", "library", "session"):
            s = r[way]
            lines.append(
                f"| {r['model']} | {r['variant']} | {server} | {way} | {s['p50_ms']:.2f} | {s['p90_ms']:.2f} | "
                f"{s['p99_ms']:.2f} |"
            )
    for r in report["results"]:
        o = r["overhead_ms"]
        lines.append("")
        lines.append(
            f"{r['model']} {' '.join(r['server_args']) or 'defaults'}: served - library p50 {o['p50']:+.2f} ms, "
            f"p99 {o['p99']:+.2f} ms, median of per-query differences {o['median_of_pairs']:+.2f} ms; "
            f"server parts (median ms) {r['served_parts_median_ms']}; server CPU "
            f"{r['server_cpu_ms_per_query']} ms per query, {r['server_idle_cpu_percent']} % idle; max |served - "
            f"library| {r['served_max_abs_diff_vs_library']:.2e}"
        )
        if "profile" in r:
            p, lim = r["profile"], r["limit"]
            top = ", ".join(
                f"{op} {v['ms']:.3f}" + (f" ({v['per_run']:g} x {v['median_us']:g} us)" if "per_run" in v else "")
                for op, v in list(p["ops"].items())[:8]
            )
            count = f", {p['kernels_per_run']:g} kernels" if "kernels_per_run" in p else ""
            lines.append(
                f"profile 1x{p['tokens']}: run {p['model_run_ms']:.3f} ms (kernels {p['kernels_ms']:.3f}{count}); "
                f"{top}; "
                f"work {lim['query_gflop']} GFLOP, at the large-batch rate ({lim['large_batch_gflops']} GFLOP/s) "
                f"{lim['limit_ms']:.3f} ms"
            )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--render", type=Path, help="print the table of a JSON written earlier")
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--gap-ms", type=float, default=5.0, help="pause before each call (idle threads stop spinning)")
    ap.add_argument("--tokens", default="12-20", help="prompted token counts of the queries (LO-HI)")
    ap.add_argument("--e5rt-args", default="", help="extra `e5rt serve` flags, one string")
    ap.add_argument("--library-threads", type=int, default=0, help="0: the library's default (all cores)")
    ap.add_argument("--profile-runs", type=int, default=200, help="0: no per-op profile")
    ap.add_argument("--idle-s", type=float, default=3.0, help="seconds the server's idle CPU is measured over")
    args = ap.parse_args()
    if args.render:
        print(render(json.loads(args.render.read_text())))
        return 0
    if not args.model:
        ap.error("a model directory is needed")
    report = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "results": [run(args)]}
    text = render(report)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
