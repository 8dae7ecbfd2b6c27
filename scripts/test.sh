#!/usr/bin/env bash
# Install what the tests need (idempotent), then run the whole suite. CI calls this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh test hub onnx
export PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python
.venv/bin/python -m pytest -q "$@"
