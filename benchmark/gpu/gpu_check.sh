#!/usr/bin/env bash
# One command for a GPU (issue 15 point 6): training arms in float32 / AMP O1 / AMP O2, cache generation,
# AMP parity and export, Paddle Inference with and without TensorRT -> benchmark/results/gpu/gpu_check.md/.json.
# On a machine without a GPU: benchmark/gpu/gpu_check.sh --dry-run (builds every step, measures nothing).
# All arguments go to benchmark/gpu/gpu_check.py (--help lists them). PYTHON selects the interpreter.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/../.."  # the repository root
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION="${PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION:-python}"
exec "${PYTHON:-python}" benchmark/gpu/gpu_check.py "$@"
