"""The fair-share trade-off: for each --bulk-share, a 2,048-text request's rate alone and while 16 (and 64)
clients send single queries, and the singles' p99 during the bulk request against without it.

    .venv/bin/python benchmarks/bulk_share_sweep.py models/me5-small-r --threads 2 --shares 0.25,0.5,0.75 \\
        --json benchmarks/results/bulk-share-me5-small-r.json

e5rt only, fp32; every figure from one run on one machine (the JSON records the CPU).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import serve_load as sl  # noqa: E402

from e5rt.bench.report import machine  # noqa: E402


async def measure(spec: sl.ServerSpec, queries: list[str], bulk: list[str], clients: list[int]) -> dict[str, Any]:
    await sl.closed_loop(spec, spec.port, 4, 40, lambda i: [queries[i % len(queries)]])  # warm up
    solo = await sl.bulk_alone(spec, spec.port, bulk)
    out: dict[str, Any] = {"bulk_solo": solo}
    for c in clients:
        out[f"mixed_c{c}"] = await sl.mixed(spec, spec.port, queries, bulk, 400, clients=c, solo=solo)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--shares", default="0.25,0.5,0.75")
    ap.add_argument("--clients", default="16,64")
    ap.add_argument("--bulk", type=int, default=2048)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    rows = sl.read_rows()
    queries = [r["text"] for r in rows if r.get("kind") == "query"]
    bulk = ([r["text"] for r in rows] * 2)[: args.bulk]
    clients = [int(c) for c in args.clients.split(",")]
    report: dict[str, Any] = {"machine": machine(), "model": str(args.model), "bulk_texts": len(bulk), "runs": []}
    for share in [float(x) for x in args.shares.split(",")]:
        spec = sl.server_specs(["e5rt"], args.model, args.threads, "fp32", ["--bulk-share", str(share)], [])[0]
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
        proc = subprocess.Popen(spec.cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        try:
            sl.wait_healthy(proc, spec.port, spec.health)
            run = {"bulk_share": share, "cmd": " ".join(spec.cmd), **asyncio.run(measure(spec, queries, bulk, clients))}
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        report["runs"].append(run)
        line = {
            c: (run[f"mixed_c{c}"]["bulk_rate_vs_solo"], run[f"mixed_c{c}"][f"p99_ratio_vs_unloaded_c{c}"])
            for c in clients
        }
        print(f"share {share}: solo {run['bulk_solo']['texts_per_s']} texts/s; (bulk vs solo, p99 vs idle) {line}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
