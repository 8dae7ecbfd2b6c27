#!/usr/bin/env bash
# README command 1: install everything (idempotent), then run the main job on Fashion-MNIST.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/python tools/ssld_pipeline.py -c ppcls_configs/quick_start/fashion_mnist/ssld_pipeline.yaml "$@"
