"""Paddle datasets built from label lists and transform chains.

``imagenet`` holds ``ImageNetDataset`` (PaddleClas's list format; unlabeled rows carry ``-1``) and
``build_dataset``; the other modules subclass it (``custom_label``, ``multilabel``, ``multi_scale``).
Importing this package registers every one of them in ``DATASETS``, so ``build_dataset`` finds any
name a config may use.
"""
from ppssld.data.datasets import custom_label, imagenet, multi_scale, multilabel

__all__ = ["custom_label", "imagenet", "multi_scale", "multilabel"]
