"""DistillationModel: named, already-built models; frozen ones run without gradients."""
import logging
from typing import Dict, Iterable, Optional

import paddle
import paddle.nn as nn

from ppssld.arch.roles import infer_model
from ppssld.utils.errors import ConfigError

logger = logging.getLogger(__name__)

BN_MODES = ("eval", "train")
BN_TYPES = (nn.BatchNorm, nn.BatchNorm1D, nn.BatchNorm2D, nn.BatchNorm3D, nn.SyncBatchNorm)


class DistillationModel(nn.Layer):
    """Holds each model as a sublayer named as in the config (``Teacher``, ``Student``).

    Parameter keys are therefore ``Teacher.xxx`` / ``Student.xxx``, as in PaddleClas.
    Frozen models get ``stop_gradient`` parameters, run under ``paddle.no_grad()`` and
    keep their BatchNorm in ``frozen_bn_mode``:

    * ``eval``: running statistics are used (outputs are deterministic and cacheable);
    * ``train``: only the BatchNorm layers use batch statistics, while the saved running
      statistics stay exactly as loaded (BN momentum is set to 1, so the update leaves them
      unchanged); Dropout, DropPath and every other layer stay in eval mode, so the teacher's
      output is still a deterministic function of the batch.

    Args:
        models: name -> built layer, in config order.
        frozen: names of the models to freeze.
        infer_model_name: the model that evaluation and export use (default: the last unfrozen one).
        frozen_bn_mode: ``"eval"`` or ``"train"``.
    """

    def __init__(self, models: Dict[str, nn.Layer], frozen: Iterable[str] = (),
                 infer_model_name: Optional[str] = None, frozen_bn_mode: str = "eval") -> None:
        super().__init__()
        if not models:
            raise ConfigError("DistillationModel needs at least one model")
        if frozen_bn_mode not in BN_MODES:
            raise ConfigError(f"teacher BatchNorm mode must be one of {BN_MODES}, got {frozen_bn_mode!r}")
        self.names = list(models)
        self.frozen = [n for n in self.names if n in set(frozen)]
        unknown = set(frozen) - set(self.names)
        if unknown:
            raise ConfigError(f"frozen model(s) {sorted(unknown)} are not among {self.names}")
        self.infer_model_name = infer_model(self.names, [n in self.frozen for n in self.names], infer_model_name)
        if self.infer_model_name not in self.names:
            raise ConfigError(f"infer_model_name {self.infer_model_name!r} is not among {self.names}")
        self.frozen_bn_mode = frozen_bn_mode
        for name, layer in models.items():
            self.add_sublayer(name, layer)
        for name in self.frozen:
            for param in getattr(self, name).parameters():
                param.stop_gradient = True
            if frozen_bn_mode == "train":
                for sub in getattr(self, name).sublayers(include_self=True):
                    if isinstance(sub, BN_TYPES):
                        sub._momentum = 1.0
        self._set_frozen_modes()

    def _set_frozen_modes(self) -> None:
        for name in self.frozen:
            layer = getattr(self, name)
            layer.eval()
            if self.frozen_bn_mode == "train":
                for sub in layer.sublayers(include_self=True):
                    if isinstance(sub, BN_TYPES):
                        sub.train()

    def train(self) -> "DistillationModel":
        """Trainable models to train mode; frozen models to their BatchNorm mode."""
        super().train()
        self._set_frozen_modes()
        return self

    def eval(self) -> "DistillationModel":
        """Every model to eval mode."""
        super().eval()
        return self

    def forward(self, x: paddle.Tensor) -> Dict[str, paddle.Tensor]:
        """Run every model on ``x``.

        Returns:
            name -> logits, or that model's output dict (``{"logits", <return_patterns>...}``, PaddleClas's
            keys) when it returns intermediate features; frozen models' outputs carry no gradient.
        """
        outputs = {}
        for name in self.names:
            layer = getattr(self, name)
            if name in self.frozen:
                with paddle.no_grad():
                    outputs[name] = layer(x)
            else:
                outputs[name] = layer(x)
        return outputs

    @property
    def infer_model(self) -> nn.Layer:
        """The layer that evaluation and export use."""
        return getattr(self, self.infer_model_name)
