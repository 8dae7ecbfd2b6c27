"""PaddleClas's ``AttentionModel`` (a backbone followed by AFD's feature transforms) and those transforms.

An ``AttentionModel`` entry of ``Arch.models`` lists sub-models that run as a chain: the
first (a zoo backbone with ``return_patterns``) gets the image, each next one gets the
previous one's output dict; the model returns every output merged into one dict
(``logits``, the patterns, then ``query``/``value`` or ``bilinear_key``/``value``), as in
PaddleClas. Parameter keys are ``<Model>.<sub-model>.xxx`` (``Student.ResNet18.conv1...``).
Export keeps only the backbone (see :func:`backbone_entry`).
"""
import logging
from typing import Any, Dict, List, Sequence, Tuple

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from ppssld.utils.errors import ConfigError, did_you_mean

logger = logging.getLogger(__name__)

ATTENTION_KEYS = ("name", "models", "pretrained_list", "freeze_params_list")


class LinearBNReLU(nn.Layer):
    """Linear, BatchNorm1D, optional ReLU."""

    def __init__(self, nin: int, nout: int) -> None:
        super().__init__()
        self.linear = nn.Linear(nin, nout)
        self.bn = nn.BatchNorm1D(nout)
        self.relu = nn.ReLU()

    def forward(self, x: paddle.Tensor, relu: bool = True) -> paddle.Tensor:
        y = self.bn(self.linear(x))
        return self.relu(y) if relu else y


def attention_shapes(value: Any, what: str) -> List[List[int]]:
    if not isinstance(value, list) or not value or not all(
            isinstance(s, list) and len(s) == 3 and all(isinstance(v, int) and v > 0 for v in s) for s in value):
        raise ConfigError(f"{what} must be a list of [channels, height, width] feature shapes, got {value!r}")
    return [list(s) for s in value]


def _keys(value: Any, count: int, what: str) -> List[str]:
    if not isinstance(value, list) or len(value) != count or not all(isinstance(k, str) for k in value):
        raise ConfigError(f"{what} must list {count} output keys (one per shape), got {value!r}")
    return list(value)


def unique_shapes(shapes: Sequence[Sequence[int]]) -> Tuple[List[int], List[List[int]]]:
    """``(index of each shape among the distinct ones, the distinct shapes in first-seen order)``."""
    distinct: List[List[int]] = []
    index = []
    for shape in shapes:
        if list(shape) not in distinct:
            distinct.append(list(shape))
        index.append(distinct.index(list(shape)))
    return index, distinct


def _spatial_energy(f: paddle.Tensor) -> paddle.Tensor:
    """Mean over channels of the squared feature, ``[N, 1, H, W]``."""
    return (f * f).mean(axis=1, keepdim=True)


class LinearTransformTeacher(nn.Layer):
    """AFD's teacher side: a query per teacher feature and its normalised spatial energy.

    Args:
        qk_dim: query/key size.
        t_shapes: ``[C, H, W]`` of each teacher feature.
        keys: the teacher's output keys holding those features.
    """

    def __init__(self, qk_dim: int, t_shapes: List[List[int]], keys: List[str]) -> None:
        super().__init__()
        self.t_shapes = attention_shapes(t_shapes, "t_shapes")
        self.teacher_keys = _keys(keys, len(self.t_shapes), "keys")
        self.query_layer = nn.LayerList([LinearBNReLU(s[0], int(qk_dim)) for s in self.t_shapes])

    def forward(self, feats: Dict[str, paddle.Tensor]) -> Dict[str, Any]:
        g_t = [feats[k] for k in self.teacher_keys]
        query = paddle.stack([layer(f.mean(axis=[2, 3]), relu=False) for f, layer in zip(g_t, self.query_layer)],
                             axis=1)
        value = [F.normalize(_spatial_energy(f).flatten(1), axis=1) for f in g_t]
        return {"query": query, "value": value}


class LinearTransformStudent(nn.Layer):
    """AFD's student side: a bilinear key per (student, teacher) feature pair and resampled energies.

    Args:
        qk_dim: query/key size.
        t_shapes / s_shapes: ``[C, H, W]`` of each teacher / student feature.
        keys: the student's output keys holding its features.
    """

    def __init__(self, qk_dim: int, t_shapes: List[List[int]], s_shapes: List[List[int]], keys: List[str]) -> None:
        super().__init__()
        self.t_shapes = attention_shapes(t_shapes, "t_shapes")
        self.s_shapes = attention_shapes(s_shapes, "s_shapes")
        self.student_keys = _keys(keys, len(self.s_shapes), "keys")
        self.qk_dim = int(qk_dim)
        _, self.unique_t = unique_shapes(self.t_shapes)
        self.key_layer = nn.LayerList([LinearBNReLU(s[0], self.qk_dim) for s in self.s_shapes])
        self.bilinear = LinearBNReLU(self.qk_dim, self.qk_dim * len(self.t_shapes))

    def forward(self, feats: Dict[str, paddle.Tensor]) -> Dict[str, Any]:
        g_s = [feats[k] for k in self.student_keys]
        n = g_s[0].shape[0]
        key = paddle.stack([layer(f.mean(axis=[2, 3])) for f, layer in zip(g_s, self.key_layer)], axis=1)
        bilinear_key = self.bilinear(key.reshape([-1, self.qk_dim]), relu=False).reshape(
            [n, len(self.s_shapes), len(self.t_shapes), self.qk_dim])
        value = []
        for _, h, w in self.unique_t:
            sampled = paddle.stack([F.adaptive_avg_pool2d(_spatial_energy(f), (h, w)).reshape([n, h * w])
                                    for f in g_s], axis=1)
            value.append(F.normalize(sampled, axis=2))
        return {"bilinear_key": bilinear_key, "value": value}


TRANSFORMS = {"LinearTransformTeacher": LinearTransformTeacher, "LinearTransformStudent": LinearTransformStudent}


class AttentionModel(nn.Layer):
    """Sub-models run as a chain; their output dicts merged (PaddleClas's ``AttentionModel``).

    Args:
        models: name -> layer, in chain order.
        frozen: names whose parameters are frozen (they run in eval mode, without gradients).
    """

    def __init__(self, models: Dict[str, nn.Layer], frozen: Sequence[str] = ()) -> None:
        super().__init__()
        self.names = list(models)
        self.frozen = [n for n in self.names if n in set(frozen)]
        for name, layer in models.items():
            self.add_sublayer(name, layer)
            if name in self.frozen:
                for param in layer.parameters():
                    param.stop_gradient = True

    def train(self) -> "AttentionModel":
        super().train()
        for name in self.frozen:
            getattr(self, name).eval()
        return self

    def forward(self, x: paddle.Tensor) -> Dict[str, Any]:
        merged: Dict[str, Any] = {}
        out: Any = x
        for name in self.names:
            layer = getattr(self, name)
            if name in self.frozen:
                with paddle.no_grad():
                    out = layer(out)
            else:
                out = layer(out)
            merged.update(out if isinstance(out, dict) else {"logits": out})
        return merged


def _entries(cfg: Dict[str, Any], where: str) -> List[Tuple[str, Dict[str, Any]]]:
    for key in cfg:
        if key not in ATTENTION_KEYS:
            raise ConfigError(f"unknown key {where}.{key} for AttentionModel.{did_you_mean(key, ATTENTION_KEYS)} "
                              f"Valid keys: {', '.join(ATTENTION_KEYS)}")
    models = cfg.get("models")
    if not isinstance(models, list) or len(models) < 2 or not all(
            isinstance(m, dict) and len(m) == 1 and isinstance(next(iter(m.values())), dict) for m in models):
        raise ConfigError(f"{where}.models must list a backbone then AFD transforms, like "
                          f"[{{ResNet18: {{name: ResNet18, return_patterns: [...]}}}}, "
                          f"{{LinearTransformStudent: {{name: LinearTransformStudent, ...}}}}]")
    return [(next(iter(m)), dict(next(iter(m.values())))) for m in models]


def backbone_entry(cfg: Dict[str, Any], where: str) -> Tuple[str, Dict[str, Any]]:
    """The first sub-model of an AttentionModel config (the backbone export keeps): ``(name, cfg)``."""
    name, sub = _entries(cfg, where)[0]
    if sub.get("name") in TRANSFORMS:
        raise ConfigError(f"{where}.models[0] must be the backbone, got the transform {sub.get('name')!r}")
    return name, sub


def build_attention_model(cfg: Dict[str, Any], where: str, build_single: Any, strict: bool = True,
                          load_pretrained: bool = True) -> AttentionModel:
    """Build an ``AttentionModel`` entry; ``build_single`` builds its backbone (the zoo door)."""
    entries = _entries(cfg, where)
    count = len(entries)
    frozen_flags = cfg.get("freeze_params_list") or [False] * count
    listed = cfg.get("pretrained_list") or [None] * count
    if len(frozen_flags) != count or len(listed) != count:
        raise ConfigError(f"{where}.freeze_params_list and pretrained_list need one entry per model ({count})")
    built, frozen = {}, []
    for i, (key, sub) in enumerate(entries):
        at = f"{where}.models[{i}].{key}"
        name = sub.pop("name", None)
        if name in TRANSFORMS:
            try:
                built[key] = TRANSFORMS[name](**sub)
            except TypeError as exc:
                raise ConfigError(f"{at}: {exc}") from exc
        else:
            if listed[i]:
                sub["pretrained"] = listed[i]
            if not load_pretrained:
                sub.pop("pretrained", None)
            built[key] = build_single({"name": name, **sub}, at, strict)
        if frozen_flags[i]:
            frozen.append(key)
    return AttentionModel(built, frozen)
