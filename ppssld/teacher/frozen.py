"""The frozen teacher of mining and the soft-label cache (probabilities, logits or features of a batch), from a
config, a ``.pdparams`` file or an inference model; with ``Arch.ensemble`` several teachers as one
(:class:`TeacherEnsemble`); its passes over image chunks are :mod:`ppssld.teacher.chunk_pass`."""
import logging
import os
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import paddle
import paddle.nn as nn

from ppssld.arch.build import build_model
from ppssld.arch.ensemble import EnsembleSpec, ensemble_spec, mean_log_probs
from ppssld.arch.roles import model_entries, teacher_name, teacher_weights
from ppssld.arch.weights import load_state_dict, load_weights
from ppssld.arch.zoo import build_backbone
from ppssld.utils.config import get, trust_weights
from ppssld.teacher.choose import engine_choice, engine_for, engine_label
from ppssld.teacher.inputs import TeacherInput, input_for
from ppssld.utils.errors import ConfigError
from ppssld.utils.safe_load import check_inference_side_files

logger = logging.getLogger(__name__)


class Teacher:
    """Runs a model in eval mode without gradients; returns softmax probabilities.

    Args:
        layer: the model (logits out, or probabilities when ``outputs_probs``).
        description: what was loaded, for manifests and reports.
        outputs_probs: the model already ends in a softmax.
        engine: a :mod:`ppssld.teacher` engine (logits of a numpy batch), or None: dygraph.
        prepare: the teacher's own input (:class:`ppssld.teacher.inputs.TeacherInput`), applied to every batch
            before the engine or the layer; None: the batch as given.
    """

    def __init__(self, layer: nn.Layer, description: str, outputs_probs: bool = False,
                 engine: Optional[Any] = None, prepare: Optional[TeacherInput] = None) -> None:
        self.layer = layer
        self.engine = engine
        self.prepare = prepare
        self.description = description
        self.outputs_probs = outputs_probs
        self.layer.eval()
        self._feature: Optional[paddle.Tensor] = None
        self._hook = None
        linears = [m for m in layer.sublayers(include_self=True) if isinstance(m, nn.Linear)]
        self.feature_layer = linears[-1] if linears else None

    @property
    def has_features(self) -> bool:
        """Whether the penultimate feature (input of the last Linear layer) can be captured."""
        return self.feature_layer is not None

    def _capture(self, _layer: nn.Layer, inputs: Tuple[Any, ...]) -> None:
        self._feature = inputs[0]

    def __call__(self, batch: np.ndarray, features: bool = False,
                 logits: bool = False) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """Probabilities (n, C) float32 (or, with ``logits``, the raw outputs online training's losses
        receive) and, when asked, penultimate features (n, D).

        Raises:
            ConfigError: features asked of a model without a final Linear layer, or logits asked of a
                model that already ends in a softmax.
        """
        if logits and self.outputs_probs:
            raise ConfigError(f"teacher {self.description} outputs probabilities, not logits")
        if features and not self.has_features:
            raise ConfigError(f"teacher {self.description} has no final Linear layer to take features from "
                              f"(inference models do not expose them); score without features")
        if features and self._hook is None:
            self._hook = self.feature_layer.register_forward_pre_hook(self._capture)
        self._feature = None
        if self.prepare is not None:
            batch = self.prepare.numpy(batch)
        with paddle.no_grad():
            if self.engine is not None and not features:
                out = paddle.to_tensor(self.engine(np.ascontiguousarray(batch, dtype=np.float32)))
            else:
                out = self.layer(paddle.to_tensor(np.ascontiguousarray(batch, dtype=np.float32)))
            if isinstance(out, (list, tuple)):
                out = out[0]
            if isinstance(out, dict):
                out = out.get("logits", next(iter(out.values())))
            if logits:
                probs = out.astype("float32")
            else:
                probs = out if self.outputs_probs else paddle.nn.functional.softmax(out.astype("float32"), axis=-1)
            probs = probs.numpy().astype(np.float32)
        feat = None
        if features:
            feat = self._feature.reshape([self._feature.shape[0], -1]).numpy().astype(np.float32)
        return probs, feat


def teacher_from_config(config: Dict[str, Any], name: Optional[str] = None, views: str = "eval") -> Any:
    """The teacher of a DistillationModel config (model ``name``; default :func:`ppssld.arch.roles.teacher_name`,
    which is ``Arch.ensemble``'s name when there is one: then a :class:`TeacherEnsemble`) or the model of a plain
    config. ``views``: which transform list the batches come from (``eval`` for mining, ``train`` for the
    soft-label cache); a teacher with its own ``input`` undoes that list's ``NormalizeImage``.

    Raises:
        ConfigError: no weights to load (a random teacher would select noise).
    """
    arch = config.get("Arch") or {}
    strict = bool(get(config, "Global.strict_load", True))
    trust = trust_weights(config)
    if arch.get("name") == "DistillationModel":
        name = name or teacher_name(arch)
        ensemble = ensemble_spec(arch)
        if ensemble is not None and name == ensemble.name:
            return TeacherEnsemble(ensemble, [member_teacher(config, m, views) for m in ensemble.members])
        return member_teacher(config, name, views)
    weights = arch.get("pretrained") or get(config, "Global.pretrained_model")
    if not weights:
        raise ConfigError("Arch.pretrained (or Global.pretrained_model) must name the teacher's .pdparams: "
                          "mining with a random teacher selects noise")
    layer = build_model(arch, strict=strict, load_pretrained=False)
    load_weights(layer, str(weights), strict=strict, where=f"teacher weights {weights}", trust=trust)
    engine = engine_for(layer, str(arch.get("name")), arch, "auto")
    return Teacher(layer, f"{arch.get('name')} weights={weights} engine={engine_label(engine)}",
                   engine=engine)


def member_teacher(config: Dict[str, Any], name: Optional[str], views: str = "eval") -> Teacher:
    """Frozen model ``name`` of a DistillationModel config as a :class:`Teacher`: its weights, its engine
    (:func:`ppssld.teacher.choose.engine_choice`) and its own input for ``views``.

    Raises:
        ConfigError: no such model, or no weights to load.
    """
    arch = config["Arch"]
    entries = model_entries(arch)
    names = [key for key, _ in entries]
    if name not in names:
        raise ConfigError(f"no teacher among Arch.models {names}: freeze exactly one model "
                          f"(Arch.freeze_params_list) or name it 'Teacher'")
    index = names.index(name)
    entry = entries[index][1]
    where = teacher_weights(arch, name)
    if not where:
        raise ConfigError(f"Arch.models[{index}].{name} has no pretrained weights: set its 'pretrained' "
                          f"to the teacher's .pdparams (mining with a random teacher selects noise)")
    layer = build_model(arch, strict=bool(get(config, "Global.strict_load", True)), only=name,
                        trust=trust_weights(config))
    choice, place = engine_choice(arch, name)
    engine = engine_for(layer, name, entry, choice, where=place)
    prepare = input_for(config, name, views)
    description = f"{name}={entry.get('name')} weights={where} engine={engine_label(engine)}"
    if prepare is not None:
        description += f" {prepare.describe()}"
    return Teacher(layer, description, engine=engine, prepare=prepare)


class TeacherEnsemble:
    """Several frozen :class:`Teacher` s as one (``Arch.ensemble``): probabilities are the weighted mean of the
    members' softmaxes, "logits" its log (:func:`ppssld.arch.ensemble.mean_log_probs`, the online rule); each
    member runs at its own input and in its own engine."""
    has_features = False
    outputs_probs = False

    def __init__(self, spec: EnsembleSpec, members: List[Teacher]) -> None:
        self.spec, self.members = spec, members
        parts = "; ".join(f"{w:g} x [{m.description}]" for m, w in zip(members, spec.weights))
        self.description = f"ensemble {spec.name} (temperature {spec.temperature:g}): {parts}"

    def report(self) -> Dict[str, Any]:
        """Each member's description and weight, for mining's ``report.json``."""
        return {"ensemble": self.spec.record(),
                "members": [{"name": n, "weight": w, "teacher": m.description}
                            for n, m, w in zip(self.spec.members, self.members, self.spec.weights)]}

    def __call__(self, batch: np.ndarray, features: bool = False,
                 logits: bool = False) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """Like :meth:`Teacher.__call__`: ``(probabilities, None)``, or with ``logits`` the log mean probability.

        Raises:
            ConfigError: features asked (an ensemble has no single penultimate feature).
        """
        if features:
            raise ConfigError(f"{self.description}: an ensemble has no single penultimate feature; score without "
                              f"features (feature de-duplication needs one teacher)")
        outs = [paddle.to_tensor(m(batch, logits=True)[0]) for m, w in zip(self.members, self.spec.weights) if w > 0]
        with paddle.no_grad():
            logp = mean_log_probs(outs, [w for w in self.spec.weights if w > 0], self.spec.temperature)
            out = logp if logits else paddle.exp(logp)
        return out.numpy().astype(np.float32), None


def teacher_from_weights(backbone: str, weights: str, class_num: int, strict: bool = True,
                         trust: bool = False) -> Teacher:
    """A zoo backbone with weights from a ``.pdparams`` / ``.safetensors`` file (keys may carry a
    ``Teacher.`` prefix); ``trust`` reads a pickle with ``paddle.load`` (``--trust-weights``)."""
    layer = build_backbone(backbone, class_num=class_num, where="--teacher-backbone")
    state = load_state_dict(weights, "--teacher-weights", trust=trust)
    if any(k.startswith("Teacher.") for k in state):
        state = {k[len("Teacher."):]: v for k, v in state.items() if k.startswith("Teacher.")}
    load_weights(layer, state, strict=strict, where=weights)
    engine = engine_for(layer, backbone, {}, "auto")
    return Teacher(layer, f"{backbone} weights={weights} engine={engine_label(engine)}",
                   engine=engine)


def inference_outputs_probs(prefix: str) -> bool:
    """Whether the exported model at ``prefix`` ends in a softmax (or sigmoid): the ``inference.yml`` beside it
    says so (``Global.output``), else the graph's last operation (PaddleClas's exports end in a softmax).

    Raises:
        ConfigError: neither tells (no readable graph file at ``prefix``).
    """
    from ppssld.export.infer_config import INFER_CONFIG, read_infer_config
    from ppssld.export.outputs import LOGITS, graph_output

    yml = os.path.join(os.path.dirname(os.path.abspath(prefix)), INFER_CONFIG)
    infer_cfg = read_infer_config(yml) if os.path.isfile(yml) else {}
    model = next((prefix + ext for ext in (".json", ".pdmodel") if os.path.isfile(prefix + ext)), None)
    return graph_output(infer_cfg, model, yml if infer_cfg else f"{prefix} (no {INFER_CONFIG} beside it)") != LOGITS


def teacher_from_inference(prefix: str, outputs_probs: Optional[bool] = None, trust: bool = False) -> Teacher:
    """An exported model (``paddle.jit.save`` prefix).

    ``outputs_probs`` None: decided by :func:`inference_outputs_probs`, so a PaddleClas or ppssld export that
    ends in a softmax is not given a second one. The pickled side files of legacy models are checked first
    unless ``trust`` (``--trust-weights``).
    """
    if not trust:
        check_inference_side_files(prefix)
    if outputs_probs is None:
        outputs_probs = inference_outputs_probs(prefix)
    layer = paddle.jit.load(prefix)
    kind = "probabilities" if outputs_probs else "logits"
    return Teacher(layer, f"inference model {prefix} ({kind} out)", outputs_probs=outputs_probs)
