"""Floor 3: label lists, transforms, datasets, samplers, loaders and dataset preparation.

Only the paddle-free modules are imported here, so ``ppssld.data.transforms`` stays usable by
the deploy predictor without paddle. Import ``ppssld.data.dataset``, ``.sampler``, ``.loader``,
``.prepare`` and ``.check`` explicitly.
"""
from ppssld.data import autoaugment, label_list, transforms

__all__ = ["autoaugment", "label_list", "transforms"]
