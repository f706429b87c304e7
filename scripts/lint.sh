#!/usr/bin/env bash
# The lint and type gate CI runs before the tests: ruff (lint and format) on the tree, mypy --strict on the
# runtime (e5rt/) and mypy on the export stage.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy --strict e5rt
.venv/bin/mypy export
