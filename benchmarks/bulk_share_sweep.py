"""The fair-share trade-off: for each --bulk-share, a 2,048-text request's rate alone and while 16 (and 64)
clients send single queries, and the singles' p99 during the bulk request against without it.

    .venv/bin/python benchmarks/bulk_share_sweep.py models/me5-small-r --threads 2 --shares 0.25,0.5,0.75 \\
        --json benchmarks/results/bulk-share-me5-small-r.json
    .venv/bin/python benchmarks/bulk_share_sweep.py --render SWEEP.json [EARLIER_SWEEP.json]

The JSON is written with its table (.md) and trade-off plot (.png) beside it; --render rebuilds those two (an
earlier sweep given too is drawn dashed in the plot).

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


def _clients(report: dict[str, Any]) -> list[int]:
    """The query-client counts the sweep ran its mixed cases with."""
    return [int(k.split("_c")[1]) for k in report["runs"][0] if k.startswith("mixed_c")]


def table(report: dict[str, Any]) -> str:
    clients = _clients(report)
    head = "| --bulk-share | bulk alone, texts/s | " + " | ".join(
        f"{c} clients: bulk rate vs alone | singles p99 vs idle" for c in clients
    )
    lines = [head + " |", "|" + "---|" * (2 + 2 * len(clients))]
    for run in report["runs"]:
        cells = [f"{run['bulk_share']}", f"{run['bulk_solo']['texts_per_s']:.1f}"]
        for c in clients:
            m = run[f"mixed_c{c}"]
            during, idle = m["singles_during_bulk"]["p99_ms"], m[f"singles_unloaded_c{c}"]["p99_ms"]
            cells += [f"{m['bulk_rate_vs_solo']:.0%}", f"{during:.0f} / {idle:.0f} ms ({during / idle:.2f}×)"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path, before: dict[str, Any] | None = None) -> None:
    """The trade-off: the bulk request's share of its solo rate against the queries' p99 over idle, per share;
    `before` (an earlier sweep's report) is drawn dashed beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clients = _clients(report)
    m = report["machine"]
    fig, ax = plt.subplots(figsize=(8.5, 5.5))
    for c, color in zip(clients, ("tab:blue", "tab:orange", "tab:green"), strict=False):
        for rep, style, label in ((before, ":", " (before)"), (report, "-", "")):
            if rep is None:
                continue
            xs = [run[f"mixed_c{c}"]["bulk_rate_vs_solo"] * 100 for run in rep["runs"]]
            ys = [run[f"mixed_c{c}"][f"p99_ratio_vs_unloaded_c{c}"] for run in rep["runs"]]
            ax.plot(xs, ys, marker="o", linestyle=style, color=color, label=f"{c} query clients{label}")
            for run, x, y in zip(rep["runs"], xs, ys, strict=True):
                ax.annotate(f"{run['bulk_share']}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.axvline(40, color="grey", linestyle=":", label="bulk target (>= 40 %)")
    ax.axhline(3, color="grey", linestyle="--", label="p99 target (<= 3x idle)")
    ax.set(
        xlabel="bulk request's rate, % of its rate alone (higher is better)",
        ylabel="queries' p99 during bulk / idle (lower is better)",
    )
    ax.set_title(f"--bulk-share sweep, {m['cpu']}, {m['cores']} cores ({', '.join(m['flags'])})", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render(report: dict[str, Any], path: Path, before: dict[str, Any] | None = None) -> None:
    """The table (.md) and the plot (.png) beside the sweep's JSON at path."""
    path.with_suffix(".md").write_text(table(report) + "\n")
    plot(report, path.with_suffix(".png"), before)


def main() -> int:
    if len(sys.argv) in (3, 4) and sys.argv[1] == "--render":  # --render SWEEP.json [EARLIER_SWEEP.json]
        path = Path(sys.argv[2])
        report = json.loads(path.read_text())
        before = json.loads(Path(sys.argv[3]).read_text()) if len(sys.argv) == 4 else None
        render(report, path, before)
        print(table(report))
        return 0
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
    print(table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
        render(report, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
