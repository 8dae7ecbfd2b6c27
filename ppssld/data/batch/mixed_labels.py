"""The labels of a mixed batch (Mixup / Cutmix): two label rows and the share of the first.

Made by the batch operators (:mod:`ppssld.data.batch.ops`), read by the hard-label losses
(:func:`ppssld.loss.mixed.mixed_label_ce`); a row whose two source images are not both labelled
is left out of the hard loss (see :meth:`MixedLabels.kept_rows`).
"""
from dataclasses import dataclass
from typing import List

import paddle


@dataclass
class MixedLabels:
    """Labels of a mixed batch: row ``i`` is ``lam[i]`` of label ``a[i]`` and ``1 - lam[i]`` of ``b[i]``.

    Attributes:
        a: int64 ``[N]``, the row's own label (-1 = unlabeled).
        b: int64 ``[N]``, the label of the image mixed in (-1 = unlabeled).
        lam: float32 ``[N]``, the share of ``a``.
    """
    a: paddle.Tensor
    b: paddle.Tensor
    lam: paddle.Tensor

    @property
    def shape(self) -> List[int]:
        """``[N]``, like an int label tensor."""
        return list(self.a.shape)

    def kept_rows(self) -> paddle.Tensor:
        """float32 ``[N]``: 1 where the row enters the hard loss (see the module docstring)."""
        a_ok = (self.a >= 0) | (self.lam <= 0.0)
        b_ok = (self.b >= 0) | (self.lam >= 1.0)
        return (a_ok & b_ok).astype("float32")
