"""The ``Slim`` section (PaddleClas's): what ppssld implements of it, and one message for the rest.

``Slim.quant`` turns on quantization-aware training of the student (with a teacher: quantization-aware
distillation). PaddleClas's key and value: ``Slim: {quant: {name: pact}}``. ppssld's fake quantization follows
the int8 model ONNX Runtime writes (:mod:`ppssld.slim.fake_quant`); ``name`` picks how activation ranges are
learned:

* ``pact``: moving-average min/max ranges of PACT-clipped activations (two trainable bounds per tensor,
  initialised to the first batch's range; PaddleClas's only method, done with PaddleSlim there);
* ``minmax``: moving-average min/max ranges, no clipping.

``Slim.quant.moving_rate`` (PaddleSlim's name, default 0.9) is the weight of the old range.
``Slim.quant.reduce_range`` (ONNX Runtime's name, default true): 7-bit weights, ``[-64, 64]``, which ONNX
Runtime's int8 kernels compute exactly on every x86 CPU; false: ``[-127, 127]``, exact only on CPUs with VNNI
(AVX2-only CPUs saturate: :data:`ppssld.slim.fake_quant.WEIGHT_QMAX_REDUCED`). Only the model that
is exported is quantized: the infer model (student) of a ``DistillationModel``; a frozen teacher stays float.
"""
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from ppssld.arch.roles import aligned_list, infer_model, model_entries
from ppssld.utils.checks import is_number
from ppssld.utils.config import get, refuse_unknown_keys
from ppssld.utils.errors import ConfigError

SLIM_KEYS = ("quant", "prune")
QUANT_KEYS = ("name", "moving_rate", "reduce_range")
METHODS = ("pact", "minmax")
DEFAULT_MOVING_RATE = 0.9
DEFAULT_IMAGE_SHAPE = [3, 224, 224]


@dataclass(frozen=True)
class QuantSettings:
    """``Slim.quant`` once checked."""
    method: str
    moving_rate: float
    reduce_range: bool = True

    @property
    def pact(self) -> bool:
        """Whether activations are PACT-clipped."""
        return self.method == "pact"


def _section(config: Dict[str, Any]) -> Dict[str, Any]:
    slim = config.get("Slim")
    if slim is None:
        return {}
    if not isinstance(slim, dict):
        raise ConfigError(f"Slim must be a mapping like {{quant: {{name: pact}}}}, got {slim!r}")
    refuse_unknown_keys(slim, SLIM_KEYS, "Slim")
    if slim.get("prune") is not None:
        raise ConfigError("Slim.prune (PaddleSlim's FPGM / L1-norm filter pruning) is not implemented in ppssld: "
                          "remove Slim.prune; Slim.quant (quantization-aware distillation) is")
    return slim


def quant_settings(config: Dict[str, Any]) -> Optional[QuantSettings]:
    """The checked ``Slim.quant`` of ``config``, or None when it asks for no quantization.

    Raises:
        ConfigError: an unknown key or method, a bad ``moving_rate``, ``Slim.prune``.
    """
    quant = _section(config).get("quant")
    if quant is None:
        return None
    if not isinstance(quant, dict):
        raise ConfigError(f"Slim.quant must be a mapping like {{name: pact}}, got {quant!r}")
    refuse_unknown_keys(quant, QUANT_KEYS, "Slim.quant")
    name = quant.get("name")
    method = str(name).lower() if isinstance(name, str) else None
    if method not in METHODS:
        raise ConfigError(f"Slim.quant.name must be one of {', '.join(METHODS)} (pact: PaddleClas's), got {name!r}")
    rate = quant.get("moving_rate", DEFAULT_MOVING_RATE)
    if not is_number(rate) or not 0.0 <= float(rate) < 1.0:
        raise ConfigError(f"Slim.quant.moving_rate must be a number in [0, 1) (the old range's weight), got {rate!r}")
    reduce = quant.get("reduce_range", True)
    if not isinstance(reduce, bool):
        raise ConfigError(f"Slim.quant.reduce_range must be true (7-bit weights, exact on every x86 CPU) or false "
                          f"(8-bit, exact only with VNNI), got {reduce!r}")
    return QuantSettings(method, float(rate), reduce)


def quantized_model(arch: Dict[str, Any]) -> Optional[str]:
    """The name of the ``DistillationModel`` member that ``Slim.quant`` quantizes (None: the plain model).

    Raises:
        ConfigError: that member is frozen (a teacher), or is an AFD ``AttentionModel``.
    """
    if arch.get("name") != "DistillationModel":
        return None
    entries = model_entries(arch)
    names = [name for name, _ in entries]
    frozen = [bool(f) for f in aligned_list(arch, "freeze_params_list", len(entries))]
    name = infer_model(names, frozen, arch.get("infer_model_name"))
    if name in names and frozen[names.index(name)]:
        raise ConfigError(f"Slim.quant quantizes the model that is exported, Arch.infer_model_name {name!r}, but "
                          f"{name} is frozen (freeze_params_list): a teacher is never quantized, it stays float; "
                          f"make the trained student the infer model")
    cfg = dict(entries).get(name) or {}
    if cfg.get("name") == "AttentionModel":
        raise ConfigError(f"Slim.quant: Arch.models.{name} is an AFD AttentionModel; quantizing it is not "
                          f"implemented (its feature transforms are not exported)")
    return name


def check_slim(config: Dict[str, Any]) -> Optional[QuantSettings]:
    """Everything about ``Slim`` that can be refused before building (the builder calls it first).

    Raises:
        ConfigError: see :func:`quant_settings`, :func:`quantized_model`, and the training options fake
            quantization does not work with here (``Global.to_static``, AMP, ``EMA``, sync BatchNorm).
    """
    settings = quant_settings(config)
    if settings is None:
        return None
    quantized_model(config.get("Arch") or {})
    clashes: List[str] = []
    if get(config, "Global.to_static", False):
        clashes.append("Global.to_static (the fake-quant forward runs in dygraph)")
    if get(config, "AMP.use_amp", False):
        clashes.append("AMP.use_amp (fake quantization runs in float32)")
    if "EMA" in config:
        clashes.append("EMA (an average of activation ranges is not implemented)")
    members = [cfg for item in get(config, "Arch.models", []) or [] if isinstance(item, dict)
               for cfg in item.values() if isinstance(cfg, dict)]
    if (get(config, "Global.use_sync_bn", False) or get(config, "Arch.use_sync_bn", False)
            or any(cfg.get("use_sync_bn") for cfg in members)):
        clashes.append("use_sync_bn (the quantizers sit on the BatchNorm layers it replaces)")
    if clashes:
        raise ConfigError(f"Slim.quant cannot be combined with {'; '.join(clashes)}: remove it or Slim.quant")
    return settings


def trace_shape(config: Dict[str, Any]) -> List[int]:
    """The input shape of the one forward that places the quantizers (``Global.image_shape``, else 3x224x224)."""
    return list(get(config, "Global.image_shape") or DEFAULT_IMAGE_SHAPE)
