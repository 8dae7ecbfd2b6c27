"""Teacher soft-label cache: generate the frozen teacher's top-K per (image, view) once, train from it.

:mod:`~ppssld.cache.store` (file layout), :mod:`~ppssld.cache.manifest` (what it was built from),
:mod:`~ppssld.cache.rules` (what it refuses), :mod:`~ppssld.cache.generate` and :mod:`~ppssld.cache.reader`.
"""
