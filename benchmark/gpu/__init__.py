"""The GPU check (``bash benchmark/gpu/gpu_check.sh [--dry-run]``): every GPU path side by side in one run.
Results in ``benchmark/results/gpu/``."""
