#!/usr/bin/env bash
# Refresh constraints.txt, the lock scripts/setup.sh, CI and the image's wheelhouse install from: resolve the
# ranges in pyproject.toml afresh in a throwaway venv (torch pinned to the CPU build first) and freeze it.
# Run the suite on the result before committing it (bash scripts/setup.sh after removing .venv, then .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
EXTRAS='cpu,export,dev,bench,server,ray,langchain,llama-index,haystack,clients'
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
"$PY" -m venv "$TMP/venv"
"$TMP/venv/bin/python" -m pip install -q --upgrade pip
"$TMP/venv/bin/python" -m pip install -q torch==2.13.0
"$TMP/venv/bin/python" -m pip install -q -c <(echo torch==2.13.0) -e ".[$EXTRAS]"
{
    echo "# The lock: exact versions of everything .venv holds (scripts/setup.sh installs with -c constraints.txt)."
    echo "# Made by scripts/lock.sh on $(date -u +%F) with $("$TMP/venv/bin/python" --version); extras: $EXTRAS."
    "$TMP/venv/bin/python" -m pip freeze --exclude-editable | grep -v '^e5rt\b' | LC_ALL=C sort -f
} > constraints.txt.new
mv constraints.txt.new constraints.txt
echo "constraints.txt: $(grep -c '==' constraints.txt) pins"
