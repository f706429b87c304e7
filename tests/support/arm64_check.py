"""Runs under an aarch64 Python (qemu-aarch64-static, scripts/arm64-root.sh): loads model directories with e5rt on
aarch64 and prints, as one JSON line, each run's vectors of the texts (batched and each text alone) and the token
ids of the id texts, for the x86 side (scripts/arm64-check.sh, tests/deploy/test_arm64.py) to compare.

stdin: {"texts": [...], "id_texts": [...], "runs": [{"model": DIR, "variant": NAME, "arm64_bf16": false,
        "alone": true}, ...]}   (alone: also embed each text on its own, for batch invariance)
usage: qemu-aarch64-static -L ROOT ROOT/usr/bin/python3.11 tests/support/arm64_check.py < job.json
       (ROOT/e5rt-site and the checkout on sys.path: see run_emulated below)
"""

from __future__ import annotations

import json
import platform
import sys
from typing import Any

# Embedded under emulation (each batched and alone, per variant): short, so the check takes about a minute.
TEXTS = [
    "hello world",
    "서울의 날씨는 맑습니다 🎉",
    "ｆｕｌｌ-ｗｉｄｔｈ ＴＥＸＴ",
    "def f(x):\n\treturn x  # code",
    "tabs\tand  runs   of spaces\n\nnewlines ",
    "Что такое машинное обучение?",
    "query: 인공지능 기술의 발전 방향",
]


def job(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The check's input: the texts above embedded, and the probe and tokenizer edge texts (past max length
    included) only tokenized, which is cheap even emulated."""
    from e5rt_export.probes import probe_texts, tokenizer_texts

    return {"texts": TEXTS, "id_texts": probe_texts() + tokenizer_texts(), "runs": runs}


def main() -> None:
    from e5rt import Embedder
    from e5rt.errors import E5rtError

    job = json.load(sys.stdin)
    out: dict[str, Any] = {"machine": platform.machine(), "runs": []}
    for run in job["runs"]:
        try:
            emb = Embedder.load(run["model"], variant=run["variant"], provider="cpu", threads=2,
                                arm64_bf16=run.get("arm64_bf16", False))  # fmt: skip
        except E5rtError as exc:  # a refusal is an answer too (bf16 on a CPU without it)
            out["runs"].append({**run, "error": f"{type(exc).__name__}: {exc}"})
            continue
        batched = emb.encode(job["texts"])
        alone = [emb.encode([t])[0].tolist() for t in job["texts"]] if run.get("alone", True) else []
        ids = [row.tolist() for row in emb.tokenizer.encode(job["id_texts"]).ids] if job.get("id_texts") else []
        out["runs"].append({**run, "batched": batched.tolist(), "alone": alone, "ids": ids,
                            "compact_tokenizer": emb.tokenizer.compact})  # fmt: skip
    print(json.dumps(out))


def run_emulated(root: str, job: dict[str, Any], cpu: str | None = None, timeout: float = 1200) -> dict[str, Any]:
    """Run main() under qemu-aarch64-static with ROOT's Python and wheels (cpu: a qemu CPU model, default max)."""
    import subprocess

    code = (
        f"import sys; sys.path[:0] = [{root + '/e5rt-site'!r}, '.']; exec(open('tests/support/arm64_check.py').read())"
    )
    cmd = ["qemu-aarch64-static", *(["-cpu", cpu] if cpu else []), "-L", root, f"{root}/usr/bin/python3.11", "-c", code]
    done = subprocess.run(cmd, input=json.dumps(job), capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"aarch64 run failed ({done.returncode}): {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def compare(job: dict[str, Any], result: dict[str, Any], reference_model: str) -> dict[str, Any]:
    """On x86: each aarch64 run's min cosine against x86 fp32 vectors of reference_model, its batch invariance
    (max |batched - alone|), and whether its token ids equal tokenizer.json's on x86."""
    import numpy as np

    from e5rt import Embedder
    from e5rt.core.tokenize import TextTokenizer
    from e5rt.manifest import load_manifest

    ref = Embedder.load(reference_model, variant="fp32", threads=2).encode(job["texts"])
    report: dict[str, Any] = {"machine": result["machine"], "texts": len(job["texts"]), "runs": []}
    for run in result["runs"]:
        row = {k: run[k] for k in ("model", "variant", "arm64_bf16", "error", "compact_tokenizer") if k in run}
        if "error" not in run:
            got, alone = np.asarray(run["batched"]), np.asarray(run["alone"])
            m = load_manifest(run["model"])
            plain = TextTokenizer(f"{run['model']}/{m.tokenizer}", m.max_length)  # tokenizer.json, x86
            row |= {
                "min_cos_vs_x86_fp32": float(np.min(np.sum(got * ref, axis=1))),
                "batch_invariance_max_abs": float(np.abs(got - alone).max()) if alone.size else None,
                "ids_identical": run["ids"] == [r.tolist() for r in plain.encode(job["id_texts"]).ids],
                "finite": bool(np.isfinite(got).all()),
            }
        report["runs"].append(row)
    return report


if __name__ == "__main__":
    main()
