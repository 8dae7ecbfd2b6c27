#!/usr/bin/env bash
# Idempotent set-up on a fresh Debian machine with Python 3.11: apt data package, a virtual
# environment in .venv, Paddle (CPU build unless PADDLE_PACKAGE says otherwise) and ppssld.
# Usage: bash scripts/install.sh [extra ...]   e.g. bash scripts/install.sh test hub onnx
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
PADDLE_PACKAGE=${PADDLE_PACKAGE:-paddlepaddle==3.3.1}

if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist
  else
    echo "warning: apt-get not found; install the Fashion-MNIST IDX files yourself and pass --src" >&2
  fi
fi

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
extras=$(IFS=,; echo "$*")
stamp=".venv/.ppssld-installed-$(sha1sum setup.py | cut -c1-12)-${extras:-base}"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q "$PADDLE_PACKAGE"
  .venv/bin/python -m pip install -q -e ".${extras:+[$extras]}"
  touch "$stamp"
fi
echo "ppssld installed in $(pwd)/.venv (extras: ${extras:-none})"
