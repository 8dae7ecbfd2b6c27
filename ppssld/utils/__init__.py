"""Floor 1: logging, errors, atomic writes, the registry and small helpers."""
