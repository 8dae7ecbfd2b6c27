"""Benchmarks of ppssld (not installed with the library). Most are scripts run as ``python benchmark/<name>.py``;
the ladder is a package run as ``python -m benchmark.ladder`` from the repository root."""
