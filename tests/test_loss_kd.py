"""DKD, DIST, WSL, SKD, distance and RKD losses against float64 numpy references."""
import numpy as np
import paddle
import pytest

from ppssld.loss import build_loss, kd_functional as KF
from ppssld.utils.errors import ConfigError
from tests.test_loss import np_kl, np_log_softmax

RNG = np.random.default_rng(3)
N, C = 12, 7



def np_dkd_rows(s, t, y, alpha, beta, temp):
    p_s, p_t = np.exp(np_log_softmax(s, temp)), np.exp(np_log_softmax(t, temp))
    rows = []
    for i, g in enumerate(y):
        b_s = np.array([p_s[i, g], 1 - p_s[i, g]])
        b_t = np.array([p_t[i, g], 1 - p_t[i, g]])
        keep = np.arange(s.shape[1]) != g
        n_s = p_s[i, keep] / p_s[i, keep].sum()
        n_t = p_t[i, keep] / p_t[i, keep].sum()
        rows.append((alpha * np_kl(b_t, b_s) + beta * np_kl(n_t, n_s)) * temp ** 2)
    return np.array(rows)


def np_pearson(a, b):
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-8)


def np_dist(s, t, beta, gamma):
    p_s, p_t = np.exp(np_log_softmax(s)), np.exp(np_log_softmax(t))
    return beta * (1 - np_pearson(p_s, p_t).mean()) + gamma * (1 - np_pearson(p_s.T, p_t.T).mean())


def np_wsl_rows(s, t, y, temp):
    ls, lt = np_log_softmax(s), np_log_softmax(t)
    idx = np.arange(len(y))
    ratio = np.maximum(-ls[idx, y] / (-lt[idx, y] + 1e-7), 0)
    w = 1 - np.exp(-ratio)
    kd = -(np.exp(np_log_softmax(t, temp)) * np_log_softmax(s, temp)).sum(1)
    return temp ** 2 * kd * w


def np_skd(s, t, y, temp, mult, alpha):
    def sphere(x):
        x = x.astype(np.float64)
        return (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, keepdims=True) + 1e-7) * mult
    ss, tt = sphere(s), sphere(t)
    kd = np.mean(-(np.exp(np_log_softmax(tt, temp)) * np_log_softmax(ss, temp)).sum(1)) * temp ** 2
    labeled = [i for i in range(len(y)) if y[i] >= 0]
    ce = np.mean([-np_log_softmax(ss)[i, y[i]] for i in labeled]) if labeled else 0.0
    return alpha * kd + (1 - alpha) * ce


def np_rkd(s, t):
    def pdist(e):
        sq = (e ** 2).sum(1)
        return np.sqrt(np.maximum(sq[:, None] + sq[None] - 2 * e @ e.T, 1e-12))

    def smooth_l1(a, b):
        d = np.abs(a - b)
        return np.mean(np.where(d < 1, 0.5 * d ** 2, d - 0.5))

    def angles(e):
        d = e[None] - e[:, None]
        d = d / np.maximum(np.linalg.norm(d, axis=2, keepdims=True), 1e-12)
        return np.einsum("ijk,ilk->ijl", d, d).reshape(-1)

    s, t = s.reshape(len(s), -1).astype(np.float64), t.reshape(len(t), -1).astype(np.float64)
    ds, dt = pdist(s), pdist(t)
    return smooth_l1(angles(s), angles(t)), smooth_l1(ds / (ds.mean() + 1e-12), dt / (dt.mean() + 1e-12))


def logits():
    return (RNG.normal(0, 2, (N, C)).astype("float32"), RNG.normal(0, 2, (N, C)).astype("float32"),
            RNG.integers(0, C, N).astype("int64"))


def run(cfg, s, t, y=None):
    outputs = {"Student": paddle.to_tensor(s), "Teacher": paddle.to_tensor(t)}
    return build_loss([cfg])(outputs, None if y is None else paddle.to_tensor(y))


@pytest.mark.parametrize("temp,alpha,beta", [(1.0, 1.0, 1.0), (4.0, 1.0, 8.0), (0.5, 0.3, 2.0)])
def test_dkd_matches_numpy(temp, alpha, beta):
    s, t, y = logits()
    got = run({"DistillationDKDLoss": {"temperature": temp, "alpha": alpha, "beta": beta}}, s, t, y)
    np.testing.assert_allclose(float(got["loss"]), np_dkd_rows(s, t, y, alpha, beta, temp).mean(), rtol=2e-5)


def test_dkd_excludes_unlabeled_rows_and_teacher_argmax_without_labels():
    s, t, y = logits()
    y[::3] = -1
    keep = y >= 0
    got = run({"DistillationDKDLoss": {"temperature": 2.0}}, s, t, y)
    np.testing.assert_allclose(float(got["loss"]), np_dkd_rows(s[keep], t[keep], y[keep], 1, 1, 2.0).mean(),
                               rtol=2e-5)
    argmax = t.argmax(1)
    for labels in (None, y):
        cfg = {"DistillationDKDLoss": {"temperature": 2.0, "use_target_as_gt": labels is not None}}
        np.testing.assert_allclose(float(run(cfg, s, t, labels)["loss"]),
                                   np_dkd_rows(s, t, argmax, 1, 1, 2.0).mean(), rtol=2e-5)


def test_dkd_all_unlabeled_is_zero_with_gradient():
    s, t, _ = logits()
    student = paddle.to_tensor(s, stop_gradient=False)
    loss = build_loss([{"DistillationDKDLoss": {}}])({"Student": student, "Teacher": paddle.to_tensor(t)},
                                                      paddle.full([N], -1, dtype="int64"))["loss"]
    loss.backward()
    assert float(loss) == 0.0 and np.all(student.grad.numpy() == 0)


def test_dkd_finite_on_saturated_logits():
    s = np.zeros((4, C), "float32")
    t = np.full((4, C), -1e4, "float32")
    t[:, 0] = 1e4  # PaddleClas's log(softmax) gives -inf here
    student = paddle.to_tensor(s, stop_gradient=False)
    loss = KF.dkd(student, paddle.to_tensor(t), paddle.zeros([4], "int64"), paddle.ones([4]), 1.0, 8.0, 4.0)
    loss.backward()
    assert np.isfinite(float(loss)) and np.isfinite(student.grad.numpy()).all()
    # teacher: all mass on class 0; the student's binary part is [1/C, (C-1)/C]; non-target parts match
    np.testing.assert_allclose(float(loss), 16 * np.log(C), rtol=1e-5)


@pytest.mark.parametrize("beta,gamma", [(1.0, 1.0), (2.0, 0.5)])
def test_dist_matches_numpy(beta, gamma):
    s, t, y = logits()
    got = run({"DistillationDISTLoss": {"beta": beta, "gamma": gamma}}, s, t, y)
    np.testing.assert_allclose(float(got["loss"]), np_dist(s, t, beta, gamma), rtol=1e-5)
    assert float(run({"DistillationDISTLoss": {}}, t, t)["loss"]) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("temp", [1.0, 2.0])
def test_wsl_matches_numpy_and_skips_unlabeled(temp):
    s, t, y = logits()
    got = run({"DistillationWSLLoss": {"temperature": temp}}, s, t, y)
    np.testing.assert_allclose(float(got["loss"]), np_wsl_rows(s, t, y, temp).mean(), rtol=2e-5)
    y[1::2] = -1
    keep = y >= 0
    got = run({"DistillationWSLLoss": {"temperature": temp}}, s, t, y)
    np.testing.assert_allclose(float(got["loss"]), np_wsl_rows(s[keep], t[keep], y[keep], temp).mean(), rtol=2e-5)


@pytest.mark.parametrize("temp,mult,alpha", [(1.0, 2.0, 0.9), (4.0, 1.0, 0.5)])
def test_skd_matches_numpy_unlabeled_only_leave_the_hard_part(temp, mult, alpha):
    s, t, y = logits()
    cfg = {"DistillationSKDLoss": {"temperature": temp, "multiplier": mult, "alpha": alpha}}
    np.testing.assert_allclose(float(run(cfg, s, t, y)["loss"]), np_skd(s, t, y, temp, mult, alpha), rtol=2e-5)
    y[:5] = -1
    np.testing.assert_allclose(float(run(cfg, s, t, y)["loss"]), np_skd(s, t, y, temp, mult, alpha), rtol=2e-5)


@pytest.mark.parametrize("mode", ["l1", "l2", "smooth_l1"])
def test_distance_matches_numpy(mode):
    s, t, _ = logits()
    d = (s - t).astype(np.float64)
    ref = {"l1": np.abs(d), "l2": d ** 2,
           "smooth_l1": np.where(np.abs(d) < 1, 0.5 * d ** 2, np.abs(d) - 0.5)}[mode]
    np.testing.assert_allclose(float(run({"DistillationDistanceLoss": {"mode": mode}}, s, t)["loss"]),
                               ref.mean(), rtol=1e-5)
    np.testing.assert_allclose(float(run({"DistillationDistanceLoss": {"mode": mode, "reduction": "sum"}},
                                         s, t)["loss"]), ref.sum(), rtol=1e-5)


def test_rkd_matches_numpy_on_feature_keys():
    fs = RNG.normal(0, 1, (6, 3, 2, 2)).astype("float32")
    ft = RNG.normal(0, 1, (6, 5, 2, 2)).astype("float32")
    outputs = {"Student": {"logits": paddle.zeros([6, 2]), "f": paddle.to_tensor(fs)},
               "Teacher": {"logits": paddle.zeros([6, 2]), "g": paddle.to_tensor(ft)}}
    parts = build_loss([{"DistillationRKDLoss": {"student_keepkeys": ["f"], "teacher_keepkeys": ["g"]}}])(outputs)
    angle, dist = np_rkd(fs, ft)
    np.testing.assert_allclose(float(parts["DistillationRKDLoss_angle_0_Student_Teacher"]), angle, rtol=1e-4)
    np.testing.assert_allclose(float(parts["DistillationRKDLoss_dist_0_Student_Teacher"]), dist, rtol=1e-4)


@pytest.mark.parametrize("cfg,pattern", [
    ({"DistillationDKDLoss": {"alpha": -1}}, "alpha must be a number >= 0"),
    ({"DistillationDKDLoss": {"use_target_as_gt": "yes"}}, "use_target_as_gt must be true or false"),
    ({"DistillationSKDLoss": {"alpha": 1.5}}, r"alpha must be a number in \[0, 1\]"),
    ({"DistillationDistanceLoss": {"mode": "l3"}}, "mode must be l1, l2 or smooth_l1"),
    ({"DistillationRKDLoss": {"student_keepkeys": ["a"], "teacher_keepkeys": []}}, "same length"),
    ({"DistillationWSLLoss": {"temperatur": 2}}, "Did you mean 'temperature'"),
])
def test_bad_config_names_the_entry(cfg, pattern):
    with pytest.raises(ConfigError, match=pattern):
        build_loss([cfg])


def test_feature_key_on_a_tensor_output_is_a_config_error():
    s, t, _ = logits()
    with pytest.raises(ConfigError, match="key 'blocks5' given but model 'Student' returns a Tensor"):
        run({"DistillationDistanceLoss": {"key": "blocks5"}}, s, t)
