#!/usr/bin/env bash
# An aarch64 Python with e5rt's runtime wheels, run under user-mode emulation (qemu-aarch64-static -L ROOT):
# Debian's arm64 packages unpacked with dpkg -x, aarch64 wheels from PyPI. Registers no binfmt handler (that would
# be kernel-wide): every aarch64 program is started through qemu explicitly.
# usage: bash scripts/arm64-root.sh [ROOT]   (default ~/.cache/e5rt-arm64; prints ROOT when ready)
set -euo pipefail
ROOT="${1:-$HOME/.cache/e5rt-arm64}"
ORT="${E5RT_ARM64_ORT:-1.26.0}"  # 1.22-1.26 import under Debian's qemu 7.2; 1.29+ segfault at import there
if [ -x "$ROOT/usr/bin/python3.11" ] && [ -f "$ROOT/.wheels-$ORT" ]; then echo "$ROOT"; exit 0; fi
command -v qemu-aarch64-static >/dev/null || apt-get install -y -q qemu-user-static >/dev/null
dpkg --print-foreign-architectures | grep -qx arm64 || { dpkg --add-architecture arm64; apt-get update -q >/dev/null; }
mkdir -p "$ROOT" "$ROOT.debs"
PKGS="libc6 libgcc-s1 libstdc++6 zlib1g libexpat1 libffi8 libbz2-1.0 liblzma5 libssl3 libsqlite3-0
      libncursesw6 libtinfo6 libreadline8 libuuid1 libcrypt1 libdb5.3 libgdbm6 libnsl2 libtirpc3 libgssapi-krb5-2
      libkrb5-3 libk5crypto3 libkrb5support0 libcom-err2 libkeyutils1 libzstd1
      python3.11-minimal libpython3.11-minimal libpython3.11-stdlib python3.11"
chmod 777 "$ROOT.debs"  # apt downloads as its own user
(cd "$ROOT.debs" && apt-get download -q $(for p in $PKGS; do echo "$p:arm64"; done) >/dev/null)
for deb in "$ROOT.debs"/*.deb; do dpkg -x "$deb" "$ROOT"; done
mkdir -p "$ROOT/wheels"
.venv/bin/python -m pip download -q --only-binary=:all: --platform manylinux_2_28_aarch64 \
  --platform manylinux_2_17_aarch64 --platform manylinux2014_aarch64 --python-version 3.11 --implementation cp \
  -d "$ROOT/wheels" "onnxruntime==$ORT" numpy tokenizers sentencepiece
SITE="$ROOT/e5rt-site"
rm -rf "$SITE" && mkdir -p "$SITE"
for whl in "$ROOT"/wheels/*.whl; do .venv/bin/python -m zipfile -e "$whl" "$SITE"; done
touch "$ROOT/.wheels-$ORT"
echo "$ROOT"
