#!/usr/bin/env bash
# e5rt on aarch64 under user-mode emulation against the same model on this x86 host: each variant's vectors (min
# cosine against x86 fp32), batch invariance on aarch64, token ids identical to tokenizer.json's. One JSON line.
# usage: bash scripts/arm64-check.sh MODEL_DIR [VARIANT...]   (default: fp32 int8-static; VARIANT+bf16 runs it with
#        ONNX Runtime's bf16 fast math, on qemu's default CPU, which reports BF16)
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL="$1"; shift
ROOT="$(bash scripts/arm64-root.sh "${E5RT_ARM64_ROOT:-$HOME/.cache/e5rt-arm64}" | tail -1)"
.venv/bin/python - "$ROOT" "$MODEL" "$@" <<'PY'
import json, sys
from tests.support.arm64_check import compare, job, run_emulated
root, model, names = sys.argv[1], sys.argv[2], [a for a in sys.argv[3:] if a] or ["fp32", "int8-static"]
runs = [{"model": model, "variant": n.removesuffix("+bf16"), "arm64_bf16": n.endswith("+bf16")} for n in names]
spec = job(runs)
print(json.dumps(compare(spec, run_emulated(root, spec), model)))
PY
