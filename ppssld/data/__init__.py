"""Floor 2: label lists, transforms, datasets, batch operators, loaders and dataset preparation.

Subpackages: ``lists`` (label lists), ``transforms`` (paddle-free ops; importing it registers them),
``datasets``, ``batch`` (Mixup/Cutmix), ``loading`` (samplers, loaders); modules: ``image`` (the one
image pipeline), ``prepare``, ``check``. Only the paddle-free parts are imported here, so the
deploy predictor can use ``ppssld.data.transforms`` without paddle; import ``ppssld.data.datasets``,
``.loading``, ``.prepare`` and ``.check`` explicitly.
"""
from ppssld.data import lists, transforms
from ppssld.data.lists import label_list

__all__ = ["label_list", "lists", "transforms"]
