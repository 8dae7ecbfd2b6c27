"""Reliability benchmarks: kill -9 fault injection, the input fuzzer, the soft-label cache checks' cost, safe
weights loading's cost. Results in ``benchmark/results/robustness/``."""
