#!/usr/bin/env bash
# e5rt on aarch64 under user-mode emulation against the same model on this x86 host: fp32 and each given variant's
# vectors (min cosine against x86 fp32), batch invariance on aarch64, identical token ids. Prints one JSON line.
# usage: bash scripts/arm64-check.sh MODEL_DIR [VARIANT...]   (default variants: fp32 int8-static)
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL="$1"; shift
VARIANTS="${*:-fp32 int8-static}"
ROOT="$(bash scripts/arm64-root.sh "${E5RT_ARM64_ROOT:-$HOME/.cache/e5rt-arm64}" | tail -1)"
TEXTS="$(mktemp)"; OUT="$(mktemp)"; trap 'rm -f "$TEXTS" "$OUT"' EXIT
.venv/bin/python - "$TEXTS" <<'PY'
import json, sys
texts = ["hello world", "서울의 날씨는 맑습니다 🎉", "ｆｕｌｌ-ｗｉｄｔｈ ＴＥＸＴ", "def f(x):\n\treturn x  # code",
         "tabs\tand  runs   of spaces\n\nnewlines", "Что такое машинное обучение?", "long " * 600]
json.dump(texts, open(sys.argv[1], "w"))
PY
qemu-aarch64-static -L "$ROOT" "$ROOT/usr/bin/python3.11" -c \
  "import sys; sys.path[:0]=['$ROOT/e5rt-site','.']; sys.argv=['arm64_check','$MODEL',*'$VARIANTS'.split()]; exec(open('tests/support/arm64_check.py').read())" \
  < "$TEXTS" > "$OUT"
.venv/bin/python - "$MODEL" "$TEXTS" "$OUT" $VARIANTS <<'PY'
import json, sys
import numpy as np
from e5rt import Embedder
model, texts, arm = sys.argv[1], json.load(open(sys.argv[2])), json.load(open(sys.argv[3]))
x86 = Embedder.load(model, variant="fp32", threads=2)
ref = x86.encode(texts)
report = {"machine": arm["machine"], "texts": len(texts),
          "ids_identical": arm["ids"] == [r.tolist() for r in x86.tokenize(texts)[0].ids]}
for v in sys.argv[4:]:
    got, alone = np.asarray(arm[v]["batched"]), np.asarray(arm[v]["alone"])
    report[v] = {"min_cos_vs_x86_fp32": float(np.min(np.sum(got * ref, axis=1))),
                 "batch_invariance_max_abs": float(np.abs(got - alone).max())}
print(json.dumps(report))
PY
