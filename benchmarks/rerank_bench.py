"""Reranking in the RAG shape: one query against 100 passages of ~200 tokens, per model and engine.

For each engine: latency of one 1x100 rerank (p50, p99 over --reps sequential queries) and throughput (pairs/s)
with --concurrency queries in flight (threads in-process, HTTP clients against servers). Peers on the same
checkpoint: sentence-transformers' CrossEncoder (torch, and its ONNX backend), Infinity's /rerank server and
flashrank (its runtime on e5rt's int8 graph of the checkpoint: flashrank's own model zips are not reachable
offline). A peer that cannot run is one row naming why. Every e5rt variant's ranking is compared with e5rt
fp32's on the same queries: top-10 overlap and Kendall tau over the 100.

usage: benchmarks/rerank_bench.py --model minilm=MODEL_DIR:CHECKPOINT_DIR [--model ...] --out PREFIX
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.serve_load import free_port, wait_healthy  # noqa: E402
from e5rt.bench.corpus import load_corpus  # noqa: E402
from e5rt.bench.report import machine  # noqa: E402

Scorer = Callable[[str, list[str]], np.ndarray]  # (query, passages) -> one score per passage, input order
N_PASSAGES = 100
PASSAGE_TOKENS = 200


# --- data -------------------------------------------------------------------------------------------------------
def workload(model_dir: Path, n_queries: int, seed: int = 0) -> list[tuple[str, list[str]]]:
    """n_queries (query, 100 passages) jobs: passages are corpus texts joined until ~200 tokens (the model's
    own tokenizer counts), drawn with a seed so every engine ranks the same jobs."""
    from e5rt.core.tokenize import TextTokenizer
    from e5rt.manifest import load_manifest

    tok = TextTokenizer(model_dir / load_manifest(model_dir).tokenizer, 100_000)
    texts, queries = load_corpus()
    lengths = tok.count_tokens(texts)
    rng = np.random.default_rng(seed)
    jobs = []
    for q in range(n_queries):
        passages = []
        for _ in range(N_PASSAGES):
            parts, n = [], 0
            while n < PASSAGE_TOKENS:
                i = int(rng.integers(len(texts)))
                parts.append(texts[i])
                n += lengths[i]
            words = " ".join(parts).split()
            passages.append(" ".join(words[: max(1, int(len(words) * PASSAGE_TOKENS / n))]))
        jobs.append((queries[q % len(queries)], passages))
    return jobs


# --- engines ----------------------------------------------------------------------------------------------------
class Engine:
    """A scorer plus what it really ran (printed and recorded) and how to stop it."""

    def __init__(self, name: str, score: Scorer, ran: str, stop: Callable[[], None] = lambda: None) -> None:
        self.name, self.score, self.ran, self.stop = name, score, ran, stop


def e5rt_lib(model_dir: Path, variant: str, threads: int) -> Engine:
    from e5rt import Reranker

    rr = Reranker.load(model_dir, variant=variant, threads=threads, provider="cpu")

    def score(query: str, passages: list[str]) -> np.ndarray:
        return rr.score([(query, p) for p in passages])

    return Engine(f"e5rt {variant}", score, f"e5rt.Reranker {rr.variant} on cpu, {threads} threads")


def _http_scorer(port: int, path: str, body: Callable[[str, list[str]], dict[str, Any]], rows: str | None) -> Scorer:
    import httpx

    local = threading.local()

    def score(query: str, passages: list[str]) -> np.ndarray:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600)
        r = local.client.post(path, json=body(query, passages))
        r.raise_for_status()
        data = r.json()
        out = np.zeros(len(passages), dtype=np.float32)
        for row in data[rows] if rows else data:
            out[row["index"]] = row.get("score", row.get("relevance_score"))
        return out

    return score


def _server(cmd: list[str], port: int, health: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_healthy(proc, port, health, timeout=600)
    except Exception as exc:
        proc.kill()
        err = proc.stderr.read().decode()[-600:] if proc.stderr else ""
        raise RuntimeError(f"{exc}: {err}") from exc
    return proc


def _stopper(proc: subprocess.Popen[bytes]) -> Callable[[], None]:
    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()

    return stop


def e5rt_served(model_dir: Path, variant: str, threads: int) -> Engine:
    port = free_port()
    e5rt_bin = shutil.which("e5rt", path=str(Path(sys.executable).parent)) or "e5rt"
    cmd = [e5rt_bin, "serve", str(model_dir), "--port", str(port), "--threads", str(threads), "--variant", variant]
    proc = _server([*cmd, "--provider", "cpu", "--log-level", "warning"], port, "/health")
    score = _http_scorer(port, "/rerank", lambda q, ps: {"query": q, "texts": ps, "raw_scores": True}, None)
    return Engine(f"e5rt serve {variant}", score, f"e5rt serve {variant}, POST /rerank", _stopper(proc))


def st_cross_encoder(ckpt: Path, threads: int, backend: str) -> Engine:
    import torch
    from sentence_transformers import CrossEncoder

    torch.set_num_threads(threads)
    kwargs: dict[str, Any] = {"device": "cpu"}
    if backend == "onnx":
        kwargs["backend"] = "onnx"
    model = CrossEncoder(str(ckpt), **kwargs)

    def score(query: str, passages: list[str]) -> np.ndarray:
        logits = model.predict([(query, p) for p in passages], batch_size=32, activation_fn=torch.nn.Identity())
        return np.asarray(logits, dtype=np.float32)

    import sentence_transformers

    return Engine(
        f"CrossEncoder ({backend})", score, f"sentence-transformers {sentence_transformers.__version__} {backend}"
    )


def infinity(ckpt: Path, threads: int) -> Engine:
    binary = ROOT / ".venv-infinity" / "bin" / "infinity_emb"
    if not binary.exists():
        raise RuntimeError("not installed: run benchmarks/peers/setup_infinity.sh")
    port = free_port()
    cmd = [str(binary), "v2", "--model-id", str(ckpt), "--port", str(port), "--engine", "torch", "--device", "cpu"]
    cmd += ["--batch-size", "32", "--no-bettertransformer", "--url-prefix", "/v1"]
    env = {"INFINITY_ANONYMOUS_USAGE_STATS": "0", "OMP_NUM_THREADS": str(threads)}
    proc = _server(cmd, port, "/health", env)
    body = {"model": str(ckpt), "raw_scores": True}
    score = _http_scorer(port, "/v1/rerank", lambda q, ps: {**body, "query": q, "documents": ps}, "results")
    return Engine("Infinity", score, "infinity_emb v2 --engine torch, POST /v1/rerank", _stopper(proc))


def flashrank(model_dir: Path, ckpt: Path) -> Engine:
    """flashrank's Ranker on e5rt's int8 graph: its model table gets one entry naming our file, and its model
    folder holds that graph and the checkpoint's tokenizer files, so it never downloads."""
    if importlib.util.find_spec("flashrank") is None:
        raise RuntimeError("missing flashrank: pip install flashrank")
    import flashrank
    import flashrank.Config as config
    from flashrank import Ranker, RerankRequest

    from e5rt.manifest import load_manifest

    variant = load_manifest(model_dir).variants["int8"]
    cache = Path("/tmp/e5rt-flashrank")
    folder = cache / "e5rt-int8"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(model_dir / variant.model_file, folder / "model.onnx")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "config.json", "vocab.txt"):
        if (ckpt / name).exists():
            shutil.copy(ckpt / name, folder / name)
    config.model_file_map["e5rt-int8"] = "model.onnx"
    ranker = Ranker(model_name="e5rt-int8", cache_dir=str(cache), max_length=512)

    def score(query: str, passages: list[str]) -> np.ndarray:
        rows = ranker.rerank(
            RerankRequest(query=query, passages=[{"id": i, "text": p} for i, p in enumerate(passages)])
        )
        out = np.zeros(len(passages), dtype=np.float32)
        for row in rows:
            out[row["id"]] = row["score"]
        return out

    return Engine("flashrank", score, f"flashrank {getattr(flashrank, '__version__', '0.2.10')} on e5rt's int8 graph")


# --- measurement ------------------------------------------------------------------------------------------------
def measure(engine: Engine, jobs: list[tuple[str, list[str]]], reps: int, concurrency: int, rounds: int) -> dict:
    engine.score(*jobs[0])  # warm-up
    lat, scores = [], []
    for q, ps in jobs[:reps]:
        t0 = time.perf_counter()
        scores.append(engine.score(q, ps))
        lat.append(time.perf_counter() - t0)
    todo = [jobs[i % len(jobs)] for i in range(concurrency * rounds)]
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                if not todo:
                    return
                q, ps = todo.pop()
            engine.score(q, ps)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ms = np.asarray(lat) * 1000
    return {
        "engine": engine.name,
        "ran": engine.ran,
        "queries_timed": len(lat),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "pairs_per_s_sequential": N_PASSAGES * len(lat) / float(np.sum(lat)),
        "concurrency": concurrency,
        "concurrent_queries": concurrency * rounds,
        "pairs_per_s_concurrent": N_PASSAGES * concurrency * rounds / wall,
        "_scores": scores,
    }


def kendall_tau(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's tau-a between two score vectors (pairs tied in either count as neither)."""
    da = np.sign(a[:, None] - a[None, :])
    db = np.sign(b[:, None] - b[None, :])
    n = len(a)
    return float((da * db).sum() / (n * (n - 1)))


def agreement(ref: list[np.ndarray], got: list[np.ndarray]) -> dict[str, float]:
    top10 = [len(set(np.argsort(-r)[:10]) & set(np.argsort(-g)[:10])) / 10 for r, g in zip(ref, got, strict=True)]
    taus = [kendall_tau(r, g) for r, g in zip(ref, got, strict=True)]
    return {"top10_overlap": float(np.mean(top10)), "kendall_tau": float(np.mean(taus)), "min_tau": float(min(taus))}


# --- report -----------------------------------------------------------------------------------------------------
def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"CPU: {m['cpu']}, {m['cores']} cores ({', '.join(m['flags'])}); {report['threads']} threads per engine; "
        f"1 query x {N_PASSAGES} passages of ~{PASSAGE_TOKENS} tokens.",
        "",
        "| model | engine | p50 ms | p99 ms | pairs/s (1 query) | pairs/s (n concurrent queries) "
        "| concurrent vs CrossEncoder torch | top-10 / Kendall tau vs e5rt fp32 |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for model, rows in report["models"].items():
        base = next((r for r in rows if r.get("engine") == "CrossEncoder (torch)" and "error" not in r), None)
        for r in rows:
            if "error" in r:
                lines.append(f"| {model} | {r['engine']} | – | – | – | – | – | {r['error']} |")
                continue
            ratio = f"{r['pairs_per_s_concurrent'] / base['pairs_per_s_concurrent']:.2f}x" if base else "–"
            agree = r.get("agreement")
            cell = f"{agree['top10_overlap']:.2f} / {agree['kendall_tau']:.3f}" if agree else ""
            lines.append(
                f"| {model} | {r['engine']} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | "
                f"{_rate(r['pairs_per_s_sequential'])} | {_rate(r['pairs_per_s_concurrent'])} (n={r['concurrency']}) | "
                f"{ratio} | {cell} |"
            )
    return "\n".join(lines) + "\n"


def _rate(x: float) -> str:
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}"


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(report["models"])
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        rows = [r for r in report["models"][model] if "error" not in r]
        names = [r["engine"] for r in rows]
        n = rows[0]["concurrency"] if rows else 0
        y = np.arange(len(rows))
        one, many = [r["pairs_per_s_sequential"] for r in rows], [r["pairs_per_s_concurrent"] for r in rows]
        ax.barh(y - 0.2, one, height=0.4, color="tab:orange", label="1 query")
        ax.barh(y + 0.2, many, height=0.4, color="tab:blue", label=f"{n} concurrent")
        ax.set_yticks(y, names)
        ax.set_xlabel("pairs/s")
        ax.set_title(f"{model}: rerank 1x{N_PASSAGES}")
        ax.invert_yaxis()
        ax.legend()
    m = report["machine"]
    fig.suptitle(f"{m['cpu']}, {m['cores']} cores ({', '.join(m['flags'])})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def engines(mdir: Path, cdir: Path, args: argparse.Namespace) -> list[tuple[str, Callable[[], Engine]]]:
    """(label, builder) for every engine asked for: e5rt variants in-process and served, then the peers."""
    out: list[tuple[str, Callable[[], Engine]]] = []
    for v in [v for v in args.variants.split(",") if v]:
        out.append((f"e5rt {v}", lambda v=v: e5rt_lib(mdir, v, args.threads)))
    for v in [v for v in args.served.split(",") if v]:
        out.append((f"e5rt serve {v}", lambda v=v: e5rt_served(mdir, v, args.threads)))
    peers = {
        "torch": ("CrossEncoder (torch)", lambda: st_cross_encoder(cdir, args.threads, "torch")),
        "onnx": ("CrossEncoder (onnx)", lambda: st_cross_encoder(cdir, args.threads, "onnx")),
        "infinity": ("Infinity", lambda: infinity(cdir, args.threads)),
        "flashrank": ("flashrank", lambda: flashrank(mdir, cdir)),
    }
    return out + [peers[p] for p in args.peers.split(",") if p]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", default=[], help="NAME=MODEL_DIR:CHECKPOINT_DIR")
    ap.add_argument("--render", type=Path, help="only rewrite PREFIX.md and PREFIX.png from this saved JSON")
    ap.add_argument("--variants", default="fp32,int8,int8-static")
    ap.add_argument("--served", default="int8-static", help="variants also measured through e5rt serve")
    ap.add_argument("--peers", default="torch,onnx,infinity,flashrank")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2, help="queries per concurrent client")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--out", type=Path, required=True, help="writes PREFIX.json, PREFIX.md, PREFIX.png")
    args = ap.parse_args()
    if args.render:
        saved = json.loads(args.render.read_text())
        args.out.with_suffix(".md").write_text(markdown(saved))
        plot(saved, args.out.with_suffix(".png"))
        return 0
    if not args.model:
        ap.error("give at least one --model NAME=MODEL_DIR:CHECKPOINT_DIR")
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    report: dict[str, Any] = {"machine": machine(), "threads": args.threads, "args": settings}
    report["models"] = {}
    for spec in args.model:
        name, _, dirs = spec.partition("=")
        model_dir, _, ckpt = dirs.partition(":")
        mdir, cdir = Path(model_dir), Path(ckpt)
        jobs = workload(mdir, max(args.reps, args.concurrency * args.rounds))
        builders = engines(mdir, cdir, args)
        rows: list[dict[str, Any]] = []
        for label, build in builders:
            print(f"[{name}] {label} ...", flush=True)
            try:
                engine = build()
            except Exception as exc:  # noqa: BLE001 - a peer that cannot run is one row naming why
                rows.append({"engine": label, "error": f"{type(exc).__name__}: {str(exc)[:200]}"})
                print(f"  cannot run: {rows[-1]['error']}", flush=True)
                continue
            try:
                row = measure(engine, jobs, args.reps, args.concurrency, args.rounds)
            finally:
                engine.stop()
            rows.append(row)
            print(
                f"  ran: {row['ran']}; {row['queries_timed']} x {N_PASSAGES} pairs: p50 {row['p50_ms']:.0f} ms, "
                f"p99 {row['p99_ms']:.0f} ms, {row['pairs_per_s_concurrent']:.0f} pairs/s at {args.concurrency}",
                flush=True,
            )
        ref = next((r for r in rows if r["engine"] == "e5rt fp32" and "error" not in r), None)
        for r in rows:
            if ref is not None and "error" not in r and r is not ref:
                r["agreement"] = agreement(ref["_scores"], r["_scores"])
        for r in rows:
            r.pop("_scores", None)
        report["models"][name] = rows
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    table = markdown(report)
    args.out.with_suffix(".md").write_text(table)
    plot(report, args.out.with_suffix(".png"))
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
