"""Benchmarks of ppssld (not installed with the library), grouped by what they measure:

    ladder/      the SSLD ablation ladder in miniature       python -m benchmark.ladder [converged | twin]
    mining/      hash choice, de-duplication at scale, mining throughput
    throughput/  training, loader, export, teacher engine, cache vs PaddleClas, main job online vs cached
    robustness/  kill -9 fault injection, input fuzzer, cache checks' cost, safe loading's cost
    gpu/         the GPU check                               bash benchmark/gpu/gpu_check.sh [--dry-run]
    studies/     loss study, teacher choice, first-epoch evaluation, soft-label cache fidelity, int8
    compat/      PaddleClas's own configs in ppssld

Each script runs from the repository root as ``python benchmark/<group>/<name>.py`` or ``python -m
benchmark.<group>.<name>`` and writes ``benchmark/results/<group>/<name>.{md,json}`` (see ``common.py``).
"""
