#!/usr/bin/env bash
# One device call: unpack onnxruntime-gpu (staged per ../shared/device/README.md), export the synthetic large
# model with fp16 on the GPU machine, and run benchmarks/gpu_bench.py; results land in $OUT.
set -euo pipefail
OUT=${OUT:-/tmp/e5rt-gpu}
mkdir -p "$OUT"
if [ -f .ortgpu/part03 ]; then
  cp .ortgpu/part03 /tmp/ortparts/ && cat /tmp/ortparts/part* > /tmp/ort.tar.zst
  echo "$(cat .ortgpu/SHA256)  /tmp/ort.tar.zst" | sha256sum -c
  chmod +x .ortgpu/zstd && mkdir -p /tmp/site && .ortgpu/zstd -dq /tmp/ort.tar.zst -c | tar -C /tmp/site -xf -
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
# The export stage installs as e5rt_export (its folder is export/): expose it under that name without pip.
mkdir -p /tmp/e5rt-path && ln -sfn "$PWD/export" /tmp/e5rt-path/e5rt_export
export PYTHONPATH=$PWD:/tmp/e5rt-path:${PYTHONPATH:-}
python3 -c "import onnxruntime as o; print(o.__version__, o.get_available_providers())"
python3 -m e5rt.cli export synthetic:multilingual-e5-large-instruct --out /tmp/syn-large --variants fp32,fp16 \
  --force 2>&1 | tee "$OUT/export.log"
python3 benchmarks/gpu_bench.py --model /tmp/syn-large --device cuda --out "$OUT/gpu.json" 2>&1 | tee "$OUT/bench.log"
