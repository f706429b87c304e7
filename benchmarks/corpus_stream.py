"""Corpus embedding benchmark: streaming `e5rt embed` against in-memory `Embedder.encode`, its peak RSS as the
input grows, and the Ray Data path with one actor against a single process.

    .venv/bin/python benchmarks/corpus_stream.py models/me5-small-r --texts 4000 \
        --rss-model /tmp/tiny-xlmr --rss-lines 20000,200000 --ray-texts 1000 \
        --json benchmarks/results/corpus-stream.json

Every figure is printed with the input size, variant, provider and threads it really ran with, and the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
E5RT = str(Path(sys.executable).parent / "e5rt")


def corpus_texts(n: int, seed: int = 0) -> list[str]:
    """n texts drawn from the bench corpus (15+ languages), cycled with a seeded shuffle."""
    from e5rt.bench.corpus import DEFAULT_CORPUS, read_rows

    base = [r["text"] for r in read_rows(DEFAULT_CORPUS)]
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < n:
        block = base[:]
        rng.shuffle(block)
        out.extend(block)
    return out[:n]


def write_jsonl(path: Path, texts: list[str]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for i, t in enumerate(texts):
            fh.write(json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n")


def measured(cmd: list[str]) -> tuple[float, float, str]:
    """Wall seconds, the child's ru_maxrss in MB (inflated by this process's size: it counts from the fork;
    use the CLI's own "peak RSS" line instead), and its stderr."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    err = proc.stderr.read() if proc.stderr else ""
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err}")
    return time.perf_counter() - t0, usage.ru_maxrss / 1024, err


def throughput(model: str, n: int, threads: int, variant: str, tmp: Path) -> dict[str, Any]:
    """In-memory encode and the streaming run, in one process, same model session, same texts."""
    from e5rt import Embedder
    from e5rt.corpus import CorpusOptions, Output, Source, embed_corpus

    texts = corpus_texts(n)
    src = tmp / f"stream-{n}.jsonl"
    write_jsonl(src, texts)
    emb = Embedder.load(model, variant=variant, threads=threads)
    emb.encode(texts[:32])  # warm-up
    runs: dict[str, list[float]] = {"encode": [], "stream": []}
    for rep in range(2):  # alternate, so drift on a shared machine hits both
        t0 = time.perf_counter()
        emb.encode(texts)
        runs["encode"].append(time.perf_counter() - t0)
        out = Output.parse(tmp / f"stream-{n}-{rep}.parquet")
        t0 = time.perf_counter()
        summary = embed_corpus(emb, Source(str(src)), out, CorpusOptions())
        runs["stream"].append(time.perf_counter() - t0)
        assert summary.records == n, summary
    best = {k: min(v) for k, v in runs.items()}
    return {
        "texts": n,
        "variant": emb.variant,
        "provider": emb.providers[0],
        "threads": threads,
        "encode_s": best["encode"],
        "stream_s": best["stream"],
        "encode_texts_per_s": n / best["encode"],
        "stream_texts_per_s": n / best["stream"],
        "ratio": best["encode"] / best["stream"],
        "runs": runs,
    }


def rss(model: str, sizes: list[int], variant: str, tmp: Path) -> list[dict[str, Any]]:
    rows = []
    for n in sizes:
        src = tmp / f"rss-{n}.jsonl"
        write_jsonl(src, corpus_texts(n, seed=1))
        out = tmp / f"rss-{n}.parquet"
        cmd = [E5RT, "embed", model, "-i", str(src), "-o", str(out), "--variant", variant, "--threads", "2"]
        wall, _, err = measured(cmd)
        peak = float(re.search(r"peak RSS ([\d,]+) MB", err).group(1).replace(",", ""))  # the CLI's own VmHWM
        rows.append({"lines": n, "input_mb": src.stat().st_size / 2**20, "peak_rss_mb": peak, "wall_s": wall})
        print(f"  rss: {n:,} lines ({rows[-1]['input_mb']:.0f} MB input): peak RSS {peak:.0f} MB, {wall:.0f} s")
        src.unlink()
    return rows


def ray_vs_single(model: str, n: int, variant: str, tmp: Path) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from e5rt import Embedder

    texts = corpus_texts(n, seed=2)
    src = tmp / "ray-in.parquet"
    pq.write_table(pa.table({"id": list(range(n)), "text": texts}), src, row_group_size=250)
    single = {}
    for threads in (1, 2):
        emb = Embedder.load(model, variant=variant, threads=threads)
        emb.encode(texts[:32])
        t0 = time.perf_counter()
        emb.encode(texts)
        single[threads] = n / (time.perf_counter() - t0)
    result: dict[str, Any] = {"texts": n, "variant": variant, "single_texts_per_s": single, "ray": []}
    env_cmd = [E5RT, "embed", model, "--ray", "--actors", "1", "-i", str(src), "--id-field", "id", "--variant", variant]
    for threads in (None, 2):
        out = tmp / f"ray-out-{threads}"
        cmd = env_cmd + ["-o", f"{out}/"] + (["--threads", str(threads)] if threads else [])
        wall, _, err = measured(cmd)
        summary = json.loads((out / "_index.json").read_text())["summary"]
        row = {
            "threads": summary["threads"],
            "texts_per_s": summary["texts_per_s"],
            "pipeline_s": summary["seconds"],
            "process_wall_s": wall,
            "vs_single_same_threads": summary["texts_per_s"] / single[summary["threads"]],
            "vs_single_2_threads": summary["texts_per_s"] / single[2],
        }
        result["ray"].append(row)
        print(
            f"  ray: 1 actor, {row['threads']} ORT threads: {row['texts_per_s']:.1f} texts/s "
            f"({row['vs_single_same_threads']:.0%} of one process at the same threads)"
        )
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--texts", type=int, default=4000, help="texts for the throughput comparison")
    ap.add_argument("--variant", default="fp32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rss-model", default=None, help="model for the RSS-vs-size runs (default: MODEL)")
    ap.add_argument("--rss-lines", default="20000,200000")
    ap.add_argument("--ray-texts", type=int, default=0, help="texts for the Ray comparison (0: skip)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from e5rt.bench.report import machine

    result: dict[str, Any] = {"machine": machine(), "model": args.model}
    print(f"machine: {result['machine']}")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if args.texts:
            t = throughput(args.model, args.texts, args.threads, args.variant, tmp)
            result["throughput"] = t
            print(
                f"  throughput: {t['texts']:,} texts, {t['variant']} on {t['provider']}, {t['threads']} threads: "
                f"encode {t['encode_texts_per_s']:.1f}/s, stream {t['stream_texts_per_s']:.1f}/s, "
                f"ratio {t['ratio']:.3f}"
            )
        sizes = [int(x) for x in args.rss_lines.split(",") if x]
        if sizes:
            result["rss"] = {
                "model": args.rss_model or args.model,
                "runs": rss(args.rss_model or args.model, sizes, args.variant, tmp),
            }
        if args.ray_texts:
            result["ray"] = ray_vs_single(args.model, args.ray_texts, args.variant, tmp)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
