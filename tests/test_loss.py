"""Losses against float64 numpy references, plus config building and error messages."""
import math

import numpy as np
import paddle
import pytest

from ppssld.loss import build_loss, functional as LF, validate_loss_config
from ppssld.utils.errors import ConfigError

RNG = np.random.default_rng(0)
TEMPS = [0.5, 1.0, 4.0]


# ---------------------------------------------------------------- numpy references
def np_log_softmax(x, t=1.0):
    z = x.astype(np.float64) / t
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def np_kl(p, q):
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * (np.log(p) - np.log(q)), 0.0)
    return terms.sum(-1)


def np_js(s, t, temp=1.0):
    p, q = np.exp(np_log_softmax(s, temp)), np.exp(np_log_softmax(t, temp))
    m = (p + q) / 2
    return np.mean(0.5 * np_kl(p, m) + 0.5 * np_kl(q, m))


def np_skl(s, t, temp=1.0):
    p, q = np.exp(np_log_softmax(s, temp)), np.exp(np_log_softmax(t, temp))
    return np.mean(0.5 * (np_kl(p, q) + np_kl(q, p)))


def np_kd(s, t, temp):
    p_s, p_t = np.exp(np_log_softmax(s, temp)), np.exp(np_log_softmax(t, temp))
    return np.mean(np_kl(p_t, p_s)) * temp ** 2


def np_soft_ce(s, t):
    return np.mean(-(np.exp(np_log_softmax(t)) * np_log_softmax(s)).sum(-1))


def np_hard_ce(x, y, eps=None):
    logp = np_log_softmax(x)
    rows = [i for i in range(len(y)) if y[i] >= 0]
    if not rows:
        return 0.0
    c = x.shape[1]
    vals = []
    for i in rows:
        target = np.full(c, (eps or 0.0) / c)
        target[y[i]] += 1.0 - (eps or 0.0)
        vals.append(-(target * logp[i]).sum())
    return float(np.mean(vals))


def np_paddleclas_dml(x, target, act="softmax", sum_across_class_dim=False, eps=1e-12):
    """PaddleClas DMLLoss as read in ppcls/loss/dmlloss.py: C-scaled, eps inside the log."""
    if act == "softmax":
        x, target = np.exp(np_log_softmax(x)), np.exp(np_log_softmax(target))
    elif act == "sigmoid":
        x, target = 1 / (1 + np.exp(-x.astype(np.float64))), 1 / (1 + np.exp(-target.astype(np.float64)))
    c = x.shape[-1]

    def kldiv(a, b):
        return b * np.log((b + eps) / (a + eps)) * c

    loss = (kldiv(x, target) + kldiv(target, x)) / 2
    return loss.sum(1).mean() if sum_across_class_dim else loss.mean()


def logits(n=6, c=10, scale=3.0):
    return (RNG.standard_normal((n, c)) * scale).astype(np.float32)


def T(a):
    return paddle.to_tensor(a)


PAIR_FUNCS = {
    "js": (LF.js_divergence, np_js),
    "skl": (LF.symmetric_kl, np_skl),
    "kd": (LF.kl_divergence, np_kd),
}


# ---------------------------------------------------------------- functional values
@pytest.mark.parametrize("kind", sorted(PAIR_FUNCS))
@pytest.mark.parametrize("temp", TEMPS)
def test_pair_divergences_match_numpy(kind, temp):
    ours, ref = PAIR_FUNCS[kind]
    s, t = logits(), logits()
    np.testing.assert_allclose(float(ours(T(s), T(t), temp)), ref(s, t, temp), rtol=2e-5, atol=1e-6)


def test_soft_target_ce_matches_numpy():
    s, t = logits(), logits()
    np.testing.assert_allclose(float(LF.soft_target_ce(T(s), T(t))), np_soft_ce(s, t), rtol=1e-5)


@pytest.mark.parametrize("eps", [None, 0.1])
def test_hard_ce_matches_numpy_and_skips_unlabeled(eps):
    x = logits(n=8)
    y = np.array([3, -1, 0, 9, -1, 2, 2, -1], dtype=np.int64)
    got = float(LF.hard_label_ce(T(x), T(y), eps))
    np.testing.assert_allclose(got, np_hard_ce(x, y, eps), rtol=1e-5)
    # the -1 rows' logits must not matter at all
    x2 = x.copy()
    x2[y < 0] = 1e4 * RNG.standard_normal((3, 10))
    assert float(LF.hard_label_ce(T(x2), T(y), eps)) == pytest.approx(got, rel=1e-6)


def test_hard_ce_all_unlabeled_is_zero_and_backward_works():
    x = T(logits(n=4))
    x.stop_gradient = False
    loss = LF.hard_label_ce(x, T(np.full(4, -1, dtype=np.int64)), 0.1)
    assert float(loss) == 0.0
    loss.backward()
    assert x.grad is not None and float(x.grad.abs().sum()) == 0.0


def test_hard_ce_rejects_out_of_range_labels():
    with pytest.raises(ValueError, match=r"\[-1, 10\)"):
        LF.hard_label_ce(T(logits(n=2)), T(np.array([1, 10], dtype=np.int64)))


@pytest.mark.parametrize("act", ["softmax", "sigmoid"])
@pytest.mark.parametrize("sum_dim", [False, True])
def test_dml_equals_paddleclas_formula(act, sum_dim):
    s, t = logits(c=7), logits(c=7)
    got = float(LF.paddleclas_dml(T(s), T(t), act, sum_dim))
    np.testing.assert_allclose(got, np_paddleclas_dml(s, t, act, sum_dim), rtol=2e-5)


def test_dml_default_is_symmetric_kl_and_sum_dim_scales_by_class_count():
    s, t = logits(c=12), logits(c=12)
    np.testing.assert_allclose(float(LF.paddleclas_dml(T(s), T(t))), np_skl(s, t), rtol=2e-5)
    np.testing.assert_allclose(float(LF.paddleclas_dml(T(s), T(t), sum_across_class_dim=True)),
                               12 * np_skl(s, t), rtol=2e-5)


def test_dml_keeps_paddleclas_epsilon_on_saturated_logits():
    # one probability ~e^-60 << 1e-12: PaddleClas's eps caps the log ratio
    s = np.array([[30.0, -30.0, 0.0]], dtype=np.float32)
    t = np.array([[0.0, 0.0, 0.0]], dtype=np.float32)
    ref = np_paddleclas_dml(s, t)
    assert float(LF.paddleclas_dml(T(s), T(t))) == pytest.approx(ref, rel=1e-5)
    assert abs(ref - np_skl(s, t)) > 0.1  # the eps matters here, so the test can tell


# ---------------------------------------------------------------- JS properties
def test_js_symmetric_bounded_and_zero_at_equality():
    s, t = logits(scale=8.0), logits(scale=8.0)
    a, b = float(LF.js_divergence(T(s), T(t))), float(LF.js_divergence(T(t), T(s)))
    assert a == pytest.approx(b, rel=1e-6)
    assert 0.0 <= a <= math.log(2)
    assert float(LF.js_divergence(T(s), T(s))) == pytest.approx(0.0, abs=1e-6)
    # disjoint one-hot distributions reach ln 2
    far = np.array([[1e4, -1e4]], dtype=np.float32)
    assert float(LF.js_divergence(T(far), T(far[:, ::-1].copy()))) == pytest.approx(math.log(2), rel=1e-6)


def test_js_gradient_is_quarter_of_symmetric_kl_near_agreement():
    t = logits(n=16, c=10, scale=1.0)
    s = t + 0.01 * RNG.standard_normal(t.shape).astype(np.float32)
    grads = {}
    for name, fn in [("js", LF.js_divergence), ("skl", LF.symmetric_kl),
                     ("dml", lambda a, b: LF.paddleclas_dml(a, b))]:
        x = T(s)
        x.stop_gradient = False
        fn(x, T(t)).backward()
        grads[name] = x.grad.numpy()
    ratio = np.linalg.norm(grads["js"]) / np.linalg.norm(grads["skl"])
    assert ratio == pytest.approx(0.25, abs=0.01)
    np.testing.assert_allclose(grads["dml"], grads["skl"], rtol=1e-3, atol=1e-9)


# ---------------------------------------------------------------- extremes
ALL_CFG = [{"JSDivLoss": {"temperature": 2.0}}, {"SymmetricKLLoss": None}, {"KLDivLoss": None},
           {"DistillationDMLLoss": None}, {"DistillationDMLLoss": {"act": "sigmoid"}},
           {"DistillationCELoss": None}, {"DistillationGTCELoss": {"epsilon": 0.1}},
           {"CELoss": {"model_names": ["Student"]}}]


@pytest.mark.parametrize("entry", ALL_CFG, ids=lambda e: next(iter(e)))
def test_finite_values_and_gradients_at_1e4(entry):
    sign = np.sign(RNG.standard_normal((4, 10))).astype(np.float32)
    s = T(1e4 * sign)
    s.stop_gradient = False
    t = T(-1e4 * sign)
    loss = build_loss([entry])({"Student": s, "Teacher": t}, T(np.array([0, 1, -1, 9], dtype=np.int64)))
    assert np.isfinite(float(loss["loss"]))
    loss["loss"].backward()
    assert np.isfinite(s.grad.numpy()).all()


# ---------------------------------------------------------------- config layer
def test_combined_loss_weights_names_and_total():
    s, t = logits(), logits()
    y = np.array([1, -1, 2, 3, -1, 0], dtype=np.int64)
    cfg = [{"JSDivLoss": {"weight": 4.0, "model_name_pairs": [["Student", "Teacher"]]}},
           {"DistillationGTCELoss": {"weight": 0.5}},
           {"DistillationKLDivLoss": {"temperature": 2, "key": "logits"}},
           {"JSDivLoss": {"weight": 1.0}}]
    out = build_loss(cfg)({"Student": T(s), "Teacher": T(t)}, T(y))
    assert sorted(out) == sorted(["loss", "JSDivLoss_Student_Teacher", "DistillationGTCELoss_Student",
                                  "DistillationKLDivLoss_Student_Teacher", "JSDivLoss_Student_Teacher_2"])
    np.testing.assert_allclose(float(out["JSDivLoss_Student_Teacher"]), 4 * np_js(s, t), rtol=2e-5)
    np.testing.assert_allclose(float(out["DistillationGTCELoss_Student"]), 0.5 * np_hard_ce(s, y), rtol=2e-5)
    np.testing.assert_allclose(float(out["DistillationKLDivLoss_Student_Teacher"]), np_kd(s, t, 2.0), rtol=2e-5)
    expected = 5 * np_js(s, t) + 0.5 * np_hard_ce(s, y) + np_kd(s, t, 2.0)
    np.testing.assert_allclose(float(out["loss"]), expected, rtol=2e-5)


def test_single_loss_weight_is_applied():
    s, t = logits(), logits()
    out = build_loss([{"DistillationCELoss": {"weight": 3.0}}])({"Student": T(s), "Teacher": T(t)}, None)
    np.testing.assert_allclose(float(out["loss"]), 3 * np_soft_ce(s, t), rtol=1e-5)


def test_celoss_on_tensor_and_dict():
    x = logits()
    y = np.array([1, 2, -1, 4, 5, 6], dtype=np.int64)
    loss = build_loss([{"CELoss": {"weight": 1.0, "epsilon": 0.1}}], "Loss.Eval")
    assert list(loss(T(x), T(y))) == ["CELoss", "loss"]
    np.testing.assert_allclose(float(loss(T(x), T(y))["loss"]), np_hard_ce(x, y, 0.1), rtol=1e-5)
    out = loss({"Teacher": T(logits()), "Student": T(x)}, T(y))  # picks Student
    np.testing.assert_allclose(float(out["CELoss_Student"]), np_hard_ce(x, y, 0.1), rtol=1e-5)
    with pytest.raises(ConfigError, match="model_names"):
        loss({"A": T(x), "B": T(x)}, T(y))


def test_soft_losses_include_unlabeled_rows():
    s, t = logits(), logits()
    out = build_loss([{"JSDivLoss": None}])({"Student": T(s), "Teacher": T(t)},
                                           T(np.full(6, -1, dtype=np.int64)))
    np.testing.assert_allclose(float(out["loss"]), np_js(s, t), rtol=2e-5)


def test_unknown_loss_name_lists_valid_and_closest():
    with pytest.raises(ConfigError) as err:
        build_loss([{"JSDivLos": {"weight": 1.0}}])
    msg = str(err.value)
    assert "Did you mean 'JSDivLoss'" in msg and "DistillationDMLLoss" in msg and "Loss.Train[0]" in msg


def test_unknown_param_names_closest():
    with pytest.raises(ConfigError, match=r"model_name_pair'.*Did you mean 'model_name_pairs'"):
        validate_loss_config([{"DistillationDMLLoss": {"model_name_pair": [["Student", "Teacher"]]}}])


@pytest.mark.parametrize("cfg, pattern", [
    ([{"DistillationGTCELoss": {"epsilon": 1.5}}], "epsilon"),
    ([{"JSDivLoss": {"model_name_pairs": [["Student"]]}}], "model_name_pairs"),
    ([{"JSDivLoss": {"weight": -1}}], "weight"),
    ([{"DistillationCELoss": {"epsilon": 0.1}}], "epsilon"),
    ([], "non-empty"),
    ([{"JSDivLoss": None, "CELoss": None}], "one-key"),
])
def test_bad_values_raise(cfg, pattern):
    with pytest.raises(ConfigError, match=pattern):
        validate_loss_config(cfg, "Loss.Train")


def test_missing_model_names_available_outputs():
    loss = build_loss([{"JSDivLoss": {"model_name_pairs": [["Studnet", "Teacher"]]}}])
    with pytest.raises(ConfigError, match=r"'Studnet'.*\['Student', 'Teacher'\].*Did you mean 'Student'"):
        loss({"Student": T(logits()), "Teacher": T(logits())}, None)
