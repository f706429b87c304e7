"""Memory per component and cold start of the library on a small box: each figure from a fresh process.

For each model directory (and each setting given): RSS (and its anonymous / file-backed parts) after the
interpreter starts, after `import e5rt`, after the tokenizer alone, after `Embedder.load`, after one query and after
a 64-text encode; and process start -> first query vector (the parent's clock from spawning the process to the
child's answer), median of --runs.

    .venv/bin/python benchmarks/edge_footprint.py models/me5-small-r --variant int8-static --threads 2 \
        --json benchmarks/results/edge-footprint-me5-small-r.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

CHILD = r"""
import json, sys, time
T0 = float(sys.argv[1]); model, variant, threads, tokenizer, share, load_options = sys.argv[2:8]

def mem():
    out = {}
    for line in open("/proc/self/status"):
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            out[key] = int(rest.split()[0]) // 1024
    return out

stages = {"python": mem()}
import e5rt
stages["import e5rt"] = mem()
from pathlib import Path
from e5rt.manifest import load_manifest
if tokenizer == "only":
    from e5rt.core.tokenize import TextTokenizer
    m = load_manifest(model)
    for compact in (m.compact_tokenizer, None):
        t = time.perf_counter()
        tok = TextTokenizer(Path(model) / m.tokenizer, m.max_length, compact)
        tok.wait()  # the compact tokenizer's sentencepiece model loads in the background
        tok.encode(["warm-up"])
        name = "compact tokenizer" if compact else "tokenizer.json"
        stages[name] = {**mem(), "load_s": round(time.perf_counter() - t, 3)}
        del tok
    print(json.dumps({"stages": stages})); sys.exit(0)
kw = {"variant": variant, "provider": "cpu", "threads": int(threads), "share_weights": share == "1"}
kw.update(json.loads(load_options))
emb = e5rt.Embedder.load(model, **kw) if tokenizer == "compact" else None
if emb is None:  # tokenizer.json: the same load without the manifest's compact record
    import e5rt.manifest as mf
    real = mf.load_manifest
    import dataclasses
    import e5rt.model as mm
    mm.load_manifest = lambda root: dataclasses.replace(real(root), compact_tokenizer=None)
    emb = e5rt.Embedder.load(model, **kw)
stages["loaded"] = mem()
v = emb.encode_queries(["how much protein should a female eat per day?"])
first = time.time()
stages["first query"] = mem()
from e5rt.bench.corpus import load_corpus
texts, _ = load_corpus(limit=64)
emb.encode(texts)
stages["64 texts"] = mem()
out = {"first_vector_unix": first, "stages": stages, "compact": emb.tokenizer.compact, "dim": int(v.shape[1])}
print(json.dumps(out))
"""


def cpu_facts() -> dict[str, Any]:
    info: dict[str, Any] = {"machine": platform.machine(), "cores": os.cpu_count()}
    try:
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            key, _, val = line.partition(":")
            if key.strip() in ("model name", "cpu family", "model") and key.strip() not in info:
                info[key.strip()] = val.strip()
            if key.strip() in ("flags", "Features"):
                flags = set(val.split())
                info["flags"] = sorted(
                    f for f in flags if f.startswith(("avx", "amx", "fma", "asimd", "bf16", "i8mm", "sve"))
                )
                break
    except OSError:
        pass
    return info


def run_child(model: str, variant: str, threads: int, tokenizer: str, share: bool, load: str = "{}") -> dict[str, Any]:
    t0 = time.time()
    out = subprocess.run(
        [sys.executable, "-c", CHILD, repr(t0), model, variant, str(threads), tokenizer, "1" if share else "0", load],
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if "first_vector_unix" in result:
        result["first_vector_s"] = round(result.pop("first_vector_unix") - t0, 3)
    return result


def _status(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            out[key] = int(rest.split()[0]) // 1024
    return out


def serve_rss(model: str, texts: int = 64) -> dict[str, Any]:
    """`e5rt serve MODEL` with its defaults on a free loopback port: RSS when healthy and after a request of
    `texts` corpus texts (and ten single queries), then stopped by its process id."""
    import socket
    import urllib.request

    from e5rt.bench.corpus import load_corpus

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    exe = Path(sys.executable).parent / "e5rt"
    proc = subprocess.Popen([str(exe), "serve", model, "--port", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(base + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.2)
        else:
            raise RuntimeError("e5rt serve did not become healthy in 120 s")
        out: dict[str, Any] = {"healthy": _status(proc.pid)}
        body = json.dumps({"input": load_corpus(limit=texts)[0]}).encode()

        def post(payload: bytes) -> None:
            req = urllib.request.Request(base + "/v1/embeddings", payload, {"content-type": "application/json"})
            with urllib.request.urlopen(req, timeout=300) as r:
                r.read()

        post(body)
        for _ in range(10):
            post(json.dumps({"input": "how much protein should a female eat per day?"}).encode())
        out[f"after {texts} texts + 10 queries"] = _status(proc.pid)
        return out
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--variant", default="int8-static")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--tokenizers", default="compact,json", help="compact, json (tokenizer.json), or both")
    ap.add_argument("--share-weights", default="0,1", help="0, 1 or both: the weights mapped from the file")
    ap.add_argument("--load", default="{}", help='more load options as JSON, e.g. \'{"arena": "off"}\'')
    ap.add_argument("--serve", action="store_true", help="also `e5rt serve MODEL` with its defaults")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    report: dict[str, Any] = {"cpu": cpu_facts(), "python": platform.python_version(), "runs": []}
    print(json.dumps(report["cpu"]))
    for model in args.models:
        comp = run_child(model, args.variant, args.threads, "only", False)
        report["runs"].append({"model": model, "what": "tokenizer alone", **comp})
        print(model, "tokenizer alone", json.dumps(comp["stages"]))
        for tok in args.tokenizers.split(","):
            for share in (s == "1" for s in args.share_weights.split(",")):
                runs = [run_child(model, args.variant, args.threads, tok, share, args.load) for _ in range(args.runs)]
                firsts = [r["first_vector_s"] for r in runs]
                row = {
                    "model": model,
                    "variant": args.variant,
                    "threads": args.threads,
                    "tokenizer": tok,
                    "compact_used": runs[0]["compact"],
                    "share_weights": share,
                    "load": json.loads(args.load),
                    "first_vector_s": firsts,
                    "first_vector_median_s": statistics.median(firsts),
                    "stages": runs[-1]["stages"],
                }
                report["runs"].append(row)
                st = row["stages"]
                print(
                    f"{Path(model).name} {args.variant} tokenizer={tok} share_weights={share} {args.load}: "
                    "first vector "
                    f"median {row['first_vector_median_s']:.3f} s {firsts}; RSS "
                    + ", ".join(f"{k} {v['VmRSS']} (anon {v['RssAnon']})" for k, v in st.items())
                )
        if args.serve:
            served = serve_rss(model)
            report["runs"].append({"model": model, "what": "e5rt serve (defaults)", "stages": served})
            print(Path(model).name, "e5rt serve (defaults)", json.dumps(served))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
