"""Serving memory of each variant: file size, resident memory after load, peak while embedding, and the fixed
overhead (peak RSS minus the variant's files) that the issue bounds.

    python benchmarks/serving_memory.py MODEL_DIR [--texts 256] [--threads 2] [--json out.json]

Each variant is measured in a fresh process (`python -c` child), so figures never include another variant's
session. The stages are measured in order in that child: interpreter + `import e5rt` (numpy, onnxruntime,
tokenizers), the tokenizer alone, the session, then a bulk embed of the corpus subsample.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from e5rt.bench.report import machine  # noqa: E402
from e5rt.manifest import load_manifest  # noqa: E402

CHILD = r"""
import json, sys
from pathlib import Path
from e5rt.progress import proc_status_mb
def mb(): return proc_status_mb("self", "VmRSS")
out = {"python": mb()}
import e5rt
from e5rt.bench.corpus import DEFAULT_CORPUS, load_corpus
from e5rt.core import TextTokenizer
from e5rt.manifest import load_manifest
out["imports"] = mb()
model_dir, variant, n, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
m = load_manifest(model_dir)
tok = TextTokenizer(Path(model_dir) / m.tokenizer, m.max_length)
out["tokenizer"] = mb()
del tok
emb = e5rt.Embedder.load(model_dir, variant=variant, provider="cpu", threads=threads)
out["loaded"] = mb()
out["load_peak"] = proc_status_mb("self", "VmHWM")
texts, _ = load_corpus(DEFAULT_CORPUS, n)
res = emb.embed(texts, kind="passage")
out["after_embed"] = mb()
out["peak"] = proc_status_mb("self", "VmHWM")
out["texts"] = len(texts)
out["tokens"] = res.stats.tokens
out["variant"] = emb.variant
print(json.dumps(out))
"""


def measure(model_dir: Path, variant: str, texts: int, threads: int) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(model_dir), variant, str(texts), str(threads)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "OMP_NUM_THREADS": str(threads)},
    )
    if proc.returncode != 0:
        raise SystemExit(f"{variant}: child failed: {proc.stderr.strip().splitlines()[-1:]}")
    rec = json.loads(proc.stdout.strip().splitlines()[-1])
    files = sum(f.bytes for f in load_manifest(model_dir).variants[variant].files) / 1e6
    rec["file_mb"] = round(files, 1)
    rec["fixed_overhead_mb"] = round(rec["peak"] - files, 1)
    return {k: round(v, 1) if isinstance(v, float) else v for k, v in rec.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("--texts", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variants", default=None, help="comma list (default: every variant with a CPU provider)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    manifest = load_manifest(args.model_dir)
    names = (
        args.variants.split(",") if args.variants else [n for n, v in manifest.variants.items() if "cpu" in v.providers]
    )
    rows = [measure(args.model_dir, n, args.texts, args.threads) for n in names]
    print("| variant | file MB | RSS after load | peak RSS | fixed overhead (peak − file) | imports | tokenizer |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['variant']} | {r['file_mb']} | {r['loaded']} | {r['peak']} | {r['fixed_overhead_mb']} | "
            f"{r['imports']} | {r['tokenizer']} |"
        )
    if args.json:
        result = {
            "model": manifest.name,
            "machine": machine(),
            "python": platform.python_version(),
            "texts": args.texts,
            "threads": args.threads,
            "records": rows,
        }
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
