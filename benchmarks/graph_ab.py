"""Interleaved A/B of ONNX graphs on one batch shape: each round runs every graph once, so drift on a shared machine
hits them alike; medians over the rounds.

    .venv/bin/python benchmarks/graph_ab.py /tmp/large/int8/model.onnx /tmp/large/int8-static/model.onnx \\
        [--batch 16 --length 128 --rounds 10 --threads 2] [--profile] [--json out.json]

With --json, the raw times per graph, their medians, each graph's median against the first one's, and the CPU
(model and flags) are written to a file: benchmarks/results/graph-ab-*.json.

--profile prints each graph's time per op type (onnxruntime's own profiler), the figures behind the README's
"what bounds the rest".
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from e5rt.backends.ort import CPU_DISABLED_OPTIMIZERS  # noqa: E402
from e5rt.bench.report import machine  # noqa: E402

# --ort-defaults: sessions with every onnxruntime optimizer, not as e5rt's CPU backend makes them
ORT_DEFAULTS = False


def _feeds(sess: ort.InferenceSession, batch: int, length: int) -> dict[str, np.ndarray]:
    ids = np.random.default_rng(0).integers(5, 30000, (batch, length)).astype(np.int64)
    known = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    return {i.name: known[i.name] for i in sess.get_inputs()}


def _session(path: str, threads: int, profile_prefix: str | None = None) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    if profile_prefix is not None:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    # as e5rt's CPU backend makes them (without the optimizers it disables), unless --ort-defaults
    extra = {} if ORT_DEFAULTS else {"disabled_optimizers": CPU_DISABLED_OPTIMIZERS}
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"], **extra)


def op_profile(path: str, batch: int, length: int, threads: int, runs: int = 6) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="e5rt-prof-") as tmp:  # the profile JSON is not left in the cwd
        sess = _session(path, threads, profile_prefix=str(Path(tmp) / "ort"))
        feeds = _feeds(sess, batch, length)
        for _ in range(runs):
            sess.run(None, feeds)
        events = json.loads(Path(sess.end_profiling()).read_text())
    by_op: collections.Counter[str] = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            by_op[e["args"].get("op_name", "?")] += e["dur"]
    return {op: round(us / runs / 1000, 2) for op, us in by_op.most_common()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("graphs", nargs="+")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--json", type=Path, default=None, help="write raw times, medians and ratios here")
    ap.add_argument("--ort-defaults", action="store_true", help="sessions with all of onnxruntime's optimizers")
    args = ap.parse_args()
    global ORT_DEFAULTS
    ORT_DEFAULTS = args.ort_defaults
    session_kind = "onnxruntime defaults" if ORT_DEFAULTS else f"e5rt's CPU session (without {CPU_DISABLED_OPTIMIZERS})"
    cpu = machine()
    shape = f"{args.batch}x{args.length}, {args.threads} threads, {args.rounds} rounds"
    print(f"{shape}, {session_kind}; {cpu['cpu']} {cpu['flags']}")
    sessions = [_session(g, args.threads) for g in args.graphs]
    feeds = [_feeds(s, args.batch, args.length) for s in sessions]
    for s, f in zip(sessions, feeds, strict=True):
        s.run(None, f)
        s.run(None, f)
    times: list[list[float]] = [[] for _ in sessions]
    for _ in range(args.rounds):
        for k, (s, f) in enumerate(zip(sessions, feeds, strict=True)):
            t0 = time.perf_counter()
            s.run(None, f)
            times[k].append(time.perf_counter() - t0)
    base = float(np.median(times[0]))
    rows = []
    for g, t in zip(args.graphs, times, strict=True):
        med = float(np.median(t))
        print(f"{g}: median {med * 1e3:.1f} ms, min {min(t) * 1e3:.1f} ms, {med / base:.3f}x the first graph")
        rows.append(
            {
                "graph": g,
                "inputs": [i.name for i in sessions[len(rows)].get_inputs()],
                "median_ms": round(med * 1e3, 2),
                "min_ms": round(min(t) * 1e3, 2),
                "vs_first": round(med / base, 4),
                "times_ms": [round(x * 1e3, 3) for x in t],
            }
        )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        shape = {"batch": args.batch, "length": args.length, "threads": args.threads, "rounds": args.rounds}
        result = {
            "machine": cpu,
            "shape": shape,
            "provider": "CPUExecutionProvider",
            "sessions": session_kind,
            "graphs": rows,
        }
        args.json.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.json}")
    if args.profile:
        for g in args.graphs:
            ops = op_profile(g, args.batch, args.length, args.threads)
            print(f"{g}: {sum(ops.values()):.1f} ms per run in kernels")
            for op, ms in list(ops.items())[:10]:
                print(f"  {op:28s} {ms:9.2f} ms")


if __name__ == "__main__":
    main()
