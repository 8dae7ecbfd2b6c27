"""Compatibility: which of PaddleClas's own configs load, validate, build and train a step in ppssld.
Results in ``benchmark/results/compat/``."""
