"""Runs under an aarch64 Python (qemu-aarch64-static, scripts/arm64-root.sh): loads a model directory with e5rt on
aarch64 and prints, as one JSON line, each variant's vectors of the given texts (batched and each text alone) and
the token ids, for the x86 side (scripts/arm64-check.sh) to compare.

usage: qemu-aarch64-static -L ROOT ROOT/usr/bin/python3.11 tests/support/arm64_check.py MODEL_DIR VARIANT...
       < texts.json   (ROOT/e5rt-site and the checkout on sys.path; scripts/arm64-check.sh does all of it)
"""

from __future__ import annotations

import json
import platform
import sys


def main() -> None:
    from e5rt import Embedder

    model, variants = sys.argv[1], sys.argv[2:]
    texts: list[str] = json.load(sys.stdin)
    out: dict[str, object] = {"machine": platform.machine()}
    for variant in variants:
        emb = Embedder.load(model, variant=variant, provider="cpu", threads=2)
        batched = emb.encode(texts)
        alone = [emb.encode([t])[0].tolist() for t in texts]
        out[variant] = {"batched": batched.tolist(), "alone": alone}
        out["ids"] = [row.tolist() for row in emb.tokenize(texts)[0].ids]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
