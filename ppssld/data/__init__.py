"""Floor 2: label lists, transforms, datasets, samplers, loaders and dataset preparation.

Only the paddle-free modules are imported here, so ``ppssld.data.transforms`` stays usable by
the deploy predictor without paddle. Import ``ppssld.data.dataset``, ``.sampler``, ``.loader``,
``.prepare`` and ``.check`` explicitly.
"""
from ppssld.data import autoaugment, label_list, transforms
# these register their ops in TRANSFORMS
from ppssld.data import color_jitter, ops_erasing, ops_pad, pca_lighting, randaugment_v3, timm_augment

__all__ = ["autoaugment", "color_jitter", "label_list", "ops_erasing", "ops_pad", "pca_lighting", "randaugment_v3",
           "timm_augment", "transforms"]
