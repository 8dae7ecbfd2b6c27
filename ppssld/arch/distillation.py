"""DistillationModel: named, already-built models; frozen ones run without gradients."""
import logging
from typing import Any, Callable, Dict, Iterable, Optional

import paddle
import paddle.nn as nn

from ppssld.arch.ensemble import EnsembleSpec, mean_log_probs, member_logits
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
        ensemble: ``Arch.ensemble`` (:mod:`ppssld.arch.ensemble`): its output is added under its name.
        input_members: frozen models whose config gives them their own ``input``: each must be handed its
            input preparation (:meth:`set_member_input`, :mod:`ppssld.teacher.inputs`) before it runs.

    A frozen model with its own input runs on ``prepare(x)``, the same batch ``x`` resized and normalised for it.
    """

    def __init__(self, models: Dict[str, nn.Layer], frozen: Iterable[str] = (),
                 infer_model_name: Optional[str] = None, frozen_bn_mode: str = "eval",
                 ensemble: Optional[EnsembleSpec] = None, input_members: Iterable[str] = ()) -> None:
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
        if ensemble is not None and (ensemble.name in self.names or not set(ensemble.members) <= set(self.frozen)):
            raise ConfigError(f"the ensemble {ensemble.name} needs frozen members {list(ensemble.members)} and a name "
                              f"of its own; models {self.names}, frozen {self.frozen}")
        self.ensemble = ensemble
        self.input_members = [n for n in self.frozen if n in set(input_members)]
        self.member_inputs: Dict[str, Callable[[paddle.Tensor], paddle.Tensor]] = {}
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

    def set_member_input(self, name: str, prepare: Callable[[paddle.Tensor], paddle.Tensor]) -> None:
        """Give frozen model ``name`` its own input: it runs on ``prepare(x)`` instead of ``x``."""
        if name not in self.frozen:
            raise ConfigError(f"only a frozen model takes its own input; {name!r} is not among {self.frozen}")
        self.member_inputs[name] = prepare

    def member_input(self, name: str, x: paddle.Tensor) -> paddle.Tensor:
        """What frozen model ``name`` is fed for the batch ``x``."""
        prepare = self.member_inputs.get(name)
        if prepare is not None:
            return prepare(x)
        if name in self.input_members:
            raise ConfigError(f"Arch.models.{name}.input is set but this model was built without the data config "
                              f"that says how the student's views are normalised; build it with "
                              f"ppssld.engine.builder.build_full_model (training) or ppssld.teacher.frozen")
        return x

    def ensemble_output(self, outputs: Dict[str, Any]) -> paddle.Tensor:
        """The ensemble's target from its members' ``outputs`` (log of the weighted mean probability)."""
        spec = self.ensemble
        return mean_log_probs([member_logits(outputs[m]) for m in spec.members], spec.weights, spec.temperature)

    def run_frozen(self, name: str, x: paddle.Tensor) -> Any:
        """The output of frozen model ``name`` (or of the ensemble) on the batch ``x``, without gradient."""
        with paddle.no_grad():
            if self.ensemble is not None and name == self.ensemble.name:
                return self.ensemble_output({m: self.run_frozen(m, x) for m in self.ensemble.members})
            return getattr(self, name)(self.member_input(name, x))

    def forward(self, x: paddle.Tensor) -> Dict[str, paddle.Tensor]:
        """Run every model on ``x`` (a frozen model with its own input on its prepared batch), then the ensemble.

        Returns:
            name -> logits, or that model's output dict (``{"logits", <return_patterns>...}``, PaddleClas's
            keys) when it returns intermediate features; frozen models' outputs carry no gradient. With
            ``Arch.ensemble`` also its name -> log of the members' weighted mean probability.
        """
        outputs = {}
        for name in self.names:
            layer = getattr(self, name)
            if name in self.frozen:
                with paddle.no_grad():
                    outputs[name] = layer(self.member_input(name, x))
            else:
                outputs[name] = layer(x)
        if self.ensemble is not None:
            with paddle.no_grad():
                outputs[self.ensemble.name] = self.ensemble_output(outputs)
        return outputs

    @property
    def infer_model(self) -> nn.Layer:
        """The layer that evaluation and export use."""
        return getattr(self, self.infer_model_name)


class FrozenView(nn.Layer):
    """A frozen model of a DistillationModel, or its ensemble, as a layer of its own (for evaluating it alone):
    ``forward(x)`` is what the model's outputs hold under ``name``, its own input preparation included.

    The model is held without being a sublayer, so evaluating the view (``eval()``) changes only the frozen
    layers it runs, never the student's mode.
    """

    def __init__(self, model: DistillationModel, name: str) -> None:
        super().__init__()
        self.holder = [model]
        self.target = name
        ensemble = model.ensemble
        members = ensemble.members if ensemble is not None and name == ensemble.name else (name,)
        for member in members:
            self.add_sublayer(member, getattr(model, member))
        self.eval()

    def forward(self, x: paddle.Tensor) -> Any:
        return self.holder[0].run_frozen(self.target, x)
