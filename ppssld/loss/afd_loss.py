"""Attention-based feature distillation (Ji et al. 2021), PaddleClas's ``AFDLoss``.

The student's ``AttentionModel`` outputs ``bilinear_key`` ``[N, S, T, q]`` and one resampled
energy map per distinct teacher shape (``value``); the teacher's outputs ``query``
``[N, T, q]`` and one energy map per teacher feature (``value``). For teacher feature ``t``
the attention over student features is ``softmax_s((key[s, t] . query[t] + p_t[t] . p_s[s]) / sqrt(q))``
and the loss adds ``mean_N sum_s att[s] * mean((value_s - value_t)^2)`` over ``t``.
``p_t`` and ``p_s`` are trainable positional embeddings held by the loss (they reach the
optimizer and checkpoints).
"""
import logging
import math
from typing import Any, Dict, List, Optional

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from ppssld.arch.attention import attention_shapes, unique_shapes
from ppssld.loss.functional import as_float32
from ppssld.loss.losses import ConfigLoss, Outputs
from ppssld.utils.checks import is_int
from ppssld.utils.errors import ConfigError, did_you_mean
from ppssld.utils.registry import LOSSES

logger = logging.getLogger(__name__)


class Attention(nn.Layer):
    """The AFD attention: positional embeddings and the attention-weighted energy differences."""

    def __init__(self, qk_dim: int, num_t: int, num_s: int, t_index: List[int]) -> None:
        super().__init__()
        self.qk_dim = qk_dim
        self.t_index = t_index
        self.p_t = self.create_parameter([num_t, qk_dim], default_initializer=nn.initializer.XavierNormal())
        self.p_s = self.create_parameter([num_s, qk_dim], default_initializer=nn.initializer.XavierNormal())

    def forward(self, g_s: List[Any], g_t: List[Any]) -> List[paddle.Tensor]:
        bilinear_key, s_values = as_float32(g_s[0]), [as_float32(v) for v in g_s[1]]  # AMP: the loss runs in float32
        query, t_values = as_float32(g_t[0]), [as_float32(v) for v in g_t[1]]
        logit = (paddle.einsum("bstq,btq->bts", bilinear_key, query) + paddle.matmul(self.p_t, self.p_s.t())) \
            / math.sqrt(self.qk_dim)
        att = F.softmax(logit, axis=2)
        losses = []
        for i, (n, h_t) in enumerate(zip(self.t_index, t_values)):
            diff = ((s_values[n] - h_t.unsqueeze(1)) ** 2).mean(axis=2)
            losses.append((diff * att[:, i]).sum(axis=1).mean())
        return losses


@LOSSES.register()
class AFDLoss(ConfigLoss):
    """PaddleClas's ``AFDLoss`` on the outputs of two ``AttentionModel`` s.

    Args:
        weight: multiplier in the total loss.
        model_name_pair: ``[student, teacher]``.
        student_keys: the student's ``[bilinear key, value]`` output keys.
        teacher_keys: the teacher's ``[query, value]`` output keys.
        s_shapes / t_shapes: ``[C, H, W]`` of the student's / teacher's distilled features.
        qk_dim: query/key size (as in the transforms).
        name: the part name.
    """

    accepts_mixed_labels = True  # reads features only, never labels

    def __init__(self, weight: float = 1.0, model_name_pair: Optional[List[str]] = None,
                 student_keys: Optional[List[str]] = None, teacher_keys: Optional[List[str]] = None,
                 s_shapes: Optional[List[List[int]]] = None, t_shapes: Optional[List[List[int]]] = None,
                 qk_dim: int = 128, name: str = "loss_afd") -> None:
        super().__init__(weight, None)
        pair = model_name_pair or ["Student", "Teacher"]
        if not isinstance(pair, list) or len(pair) != 2 or not all(isinstance(n, str) for n in pair):
            raise ConfigError(f"model_name_pair must be [student, teacher], got {model_name_pair!r}")
        self.model_name_pair = pair
        self.student_keys = self._two(student_keys, ["bilinear_key", "value"], "student_keys")
        self.teacher_keys = self._two(teacher_keys, ["query", "value"], "teacher_keys")
        if s_shapes is None or t_shapes is None:
            raise ConfigError("AFDLoss needs s_shapes and t_shapes (the [C, H, W] of the distilled features)")
        s_list, t_list = attention_shapes(s_shapes, "s_shapes"), attention_shapes(t_shapes, "t_shapes")
        if not is_int(qk_dim) or qk_dim < 1:
            raise ConfigError(f"qk_dim must be a positive integer, got {qk_dim!r}")
        t_index, _ = unique_shapes(t_list)
        self.attention = Attention(qk_dim, len(t_list), len(s_list), t_index)
        self.name = name

    @staticmethod
    def _two(value: Any, default: List[str], what: str) -> List[str]:
        value = default if value is None else value
        if not isinstance(value, list) or len(value) != 2 or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{what} must be two output keys like {default}, got {value!r}")
        return value

    def _pick(self, outputs: Outputs, model: str, keys: List[str]) -> List[Any]:
        if not isinstance(outputs, dict) or model not in outputs:
            names = sorted(outputs) if isinstance(outputs, dict) else []
            raise ConfigError(f"AFDLoss ({self.where}): model {model!r} is not among the outputs {names}."
                              f"{did_you_mean(model, names)}")
        out = outputs[model]
        missing = [k for k in keys if not isinstance(out, dict) or k not in out]
        if missing:
            raise ConfigError(f"AFDLoss ({self.where}): model {model!r} has no output {missing}; its Arch entry "
                              f"must be an AttentionModel with LinearTransformStudent/Teacher")
        return [out[k] for k in keys]

    def forward(self, outputs: Outputs, labels: Optional[paddle.Tensor] = None) -> Dict[str, paddle.Tensor]:
        g_s = self._pick(outputs, self.model_name_pair[0], self.student_keys)
        g_t = self._pick(outputs, self.model_name_pair[1], self.teacher_keys)
        return {self.name: paddle.add_n(self.attention(g_s, g_t))}
