"""Batch operators (Mixup / Cutmix / OpSampler) with distillation: formulas, seeding, mixed-target CE, trainer hook."""
import numpy as np
import paddle
import pytest

from ppssld.utils.config import load_config
from ppssld.data.batch.ops import RNG_TAG, BatchTransform, CutmixOperator, MixupOperator, build_batch_transform
from ppssld.engine.builder import build_trainer
from ppssld.loss import ConfigLoss, MixedLabels, build_loss, check_mixed_label_support, mixed_label_ce
from ppssld.utils.errors import ConfigError
from tests.conftest import distill_config, save_random_backbone


def _batch(n=6, c=3, h=8, w=10, seed=0):
    rs = np.random.RandomState(seed)
    return rs.randn(n, c, h, w).astype("float32"), np.array([0, 1, 2, 3, -1, 1][:n], dtype=np.int64)


def _ref_rng(seed, epoch, step, rank=0):
    return np.random.default_rng([seed, epoch, step, rank, RNG_TAG])


def test_mixup_equals_numpy_reference_and_is_seeded():
    x, y = _batch()
    bt = BatchTransform(MixupOperator(alpha=0.4), seed=11)
    images, labels = bt(paddle.to_tensor(x), paddle.to_tensor(y), epoch=3, step=5)
    rng = _ref_rng(11, 3, 5)
    perm, lam = rng.permutation(6), rng.beta(0.4, 0.4)
    np.testing.assert_allclose(images.numpy(), lam * x + (1 - lam) * x[perm], rtol=1e-5, atol=1e-6)
    assert isinstance(labels, MixedLabels)
    assert labels.a.numpy().tolist() == y.tolist() and labels.b.numpy().tolist() == y[perm].tolist()
    np.testing.assert_allclose(labels.lam.numpy(), np.full(6, lam), rtol=1e-6)
    again, _ = BatchTransform(MixupOperator(alpha=0.4), seed=11)(paddle.to_tensor(x), paddle.to_tensor(y), 3, 5)
    other, _ = bt(paddle.to_tensor(x), paddle.to_tensor(y), 3, 6)
    assert np.array_equal(again.numpy(), images.numpy()) and not np.allclose(other.numpy(), images.numpy())


@pytest.mark.parametrize("alpha", [0.2, 1.0])
def test_lam_follows_beta_alpha_alpha(alpha):
    x, y = _batch(n=2, h=2, w=2)
    bt = BatchTransform(MixupOperator(alpha=alpha), seed=0)
    lams = np.array([float(bt(paddle.to_tensor(x), paddle.to_tensor(y), 1, s)[1].lam[0]) for s in range(600)])
    var = 1.0 / (4 * (2 * alpha + 1))  # Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1))
    assert abs(lams.mean() - 0.5) < 0.05 and abs(lams.var() - var) < 0.03, (lams.mean(), lams.var())


def test_cutmix_pastes_one_box_and_lam_is_kept_area():
    x, y = _batch(h=16, w=20)
    images, labels = BatchTransform(CutmixOperator(alpha=1.0), seed=2)(paddle.to_tensor(x), paddle.to_tensor(y), 1, 1)
    rng = _ref_rng(2, 1, 1)
    perm, lam = rng.permutation(6), rng.beta(1.0, 1.0)
    cy, cx = rng.integers(16), rng.integers(20)
    ch, cw = int(16 * np.sqrt(1 - lam)), int(20 * np.sqrt(1 - lam))
    top, bottom = np.clip([cy - ch // 2, cy + ch // 2], 0, 16)
    left, right = np.clip([cx - cw // 2, cx + cw // 2], 0, 20)
    ref = x.copy()
    ref[:, :, top:bottom, left:right] = x[perm][:, :, top:bottom, left:right]
    np.testing.assert_array_equal(images.numpy(), ref)
    kept = 1 - (bottom - top) * (right - left) / (16 * 20)
    np.testing.assert_allclose(labels.lam.numpy(), np.full(6, kept), rtol=1e-6)
    assert labels.b.numpy().tolist() == y[perm].tolist()


def test_opsampler_frequencies_and_untouched_batches():
    x, y = _batch(n=2, h=2, w=2)
    bt = build_batch_transform([{"OpSampler": {"MixupOperator": {"alpha": 0.8, "prob": 0.3},
                                               "CutmixOperator": {"alpha": 1.0, "prob": 0.5}}}], seed=4)
    kinds = {"mix": 0, "none": 0}
    for step in range(400):
        _, labels = bt(paddle.to_tensor(x), paddle.to_tensor(y), 1, step)
        kinds["mix" if isinstance(labels, MixedLabels) else "none"] += 1
    assert abs(kinds["none"] / 400 - 0.2) < 0.06, kinds
    with pytest.raises(ConfigError, match="sum to 1.2"):
        build_batch_transform([{"OpSampler": {"MixupOperator": {"alpha": 0.8, "prob": 0.7},
                                              "CutmixOperator": {"alpha": 1.0, "prob": 0.5}}}])
    with pytest.raises(ConfigError, match="needs a mapping with 'prob'"):
        build_batch_transform([{"OpSampler": {"MixupOperator": {"alpha": 0.8}}}])


def _ce_rows(logits, labels, eps):
    logp = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) - logits.max(1, keepdims=True)
    target = np.eye(logits.shape[1])[np.maximum(labels, 0)]
    if eps:
        target = (1 - eps) * target + eps / logits.shape[1]
    return -(target * logp).sum(1)


@pytest.mark.parametrize("eps", [None, 0.1])
def test_mixed_ce_equals_numpy_reference_and_unlabeled_rule(eps):
    rs = np.random.RandomState(1)
    logits = rs.randn(5, 4).astype("float32") * 3
    a = np.array([0, 1, -1, 2, 3])
    b = np.array([1, -1, 2, 2, -1])
    lam = np.array([0.7, 0.4, 0.9, 0.25, 1.0], dtype="float32")
    labels = MixedLabels(paddle.to_tensor(a), paddle.to_tensor(b), paddle.to_tensor(lam))
    rows = lam * _ce_rows(logits, a, eps) + (1 - lam) * _ce_rows(logits, b, eps)
    keep = np.array([1, 0, 0, 1, 1], dtype=bool)  # row 1: b unlabeled; row 2: a unlabeled; row 4: lam == 1
    assert labels.kept_rows().numpy().astype(bool).tolist() == keep.tolist()
    got = float(mixed_label_ce(paddle.to_tensor(logits), labels, eps))
    np.testing.assert_allclose(got, rows[keep].mean(), rtol=1e-5)
    # the same through the config losses (PaddleClas MixCELoss semantics)
    loss = build_loss([{"CELoss": {"epsilon": eps}}])
    np.testing.assert_allclose(float(loss(paddle.to_tensor(logits), labels)["loss"]), rows[keep].mean(), rtol=1e-5)
    none = MixedLabels(paddle.to_tensor([-1, -1]), paddle.to_tensor([0, 1]), paddle.to_tensor([0.5, 0.5]))
    assert float(mixed_label_ce(paddle.to_tensor(logits[:2]), none)) == 0.0


def test_loss_without_mixed_support_is_refused():
    class Plain(ConfigLoss):
        pass

    combined = build_loss([{"DistillationGTCELoss": {}}, {"JSDivLoss": {}}])
    check_mixed_label_support(combined)
    combined.loss_func.append(Plain())
    with pytest.raises(ConfigError, match=r"Loss.Train\[2\].Plain cannot train on batches mixed"):
        check_mixed_label_support(combined)



def test_label_reading_distillation_losses_refuse_mixed_batches_unless_they_ignore_labels():
    # DKD/WSL/SKD read hard labels (mixed by Mixup): only use_target_as_gt (teacher argmax) trains on them;
    # DML with weight_ratio reads multi-label targets
    for refused in ({"DistillationDKDLoss": {}}, {"DistillationWSLLoss": {}}, {"DistillationSKDLoss": {}},
                    {"DistillationDMLLoss": {"weight_ratio": True}}):
        name = next(iter(refused))
        with pytest.raises(ConfigError, match=rf"Loss.Train\[0\].{name} cannot train on batches mixed"):
            check_mixed_label_support(build_loss([refused]))
    check_mixed_label_support(build_loss([{"DistillationDKDLoss": {"use_target_as_gt": True}},
                                          {"DistillationDMLLoss": {}}, {"DistillationDISTLoss": {}}]))


def test_trainer_feeds_teacher_and_student_the_same_mixed_batch(tiny_data, tmp_path):
    root, paths = tiny_data
    teacher = save_random_backbone(str(tmp_path / "t.pdparams"), class_num=4)
    cfg = distill_config(root, paths, teacher, str(tmp_path / "out"), epochs=1)
    cfg["Loss"]["Train"].append({"DistillationGTCELoss": {"weight": 1.0, "model_names": ["Student"]}})
    cfg["DataLoader"]["Train"]["dataset"]["batch_transform_ops"] = [{"MixupOperator": {"alpha": 0.2}}]
    cfg["Global"]["eval_during_train"] = False
    trainer = build_trainer(cfg)
    seen = {"Teacher": [], "Student": []}
    hooks = [getattr(trainer.model, name).register_forward_pre_hook(
        lambda layer, inputs, name=name: seen[name].append(inputs[0].numpy().copy())) for name in seen]
    calls = []
    inner = trainer.loss_net

    def recording(outputs, labels):
        parts = inner(outputs, labels)
        calls.append(({k: v.numpy().copy() for k, v in outputs.items()}, labels,
                      float(parts["DistillationGTCELoss_Student"])))
        return parts

    trainer.loss_net = recording  # what the step calls (loss_fn stays the Layer)
    trainer.train_one_epoch(1)
    for hook in hooks:
        hook.remove()
    # the raw batches of epoch 1, mixed by the same (seed, epoch, step) generator
    trainer.train_sampler.set_epoch(1)
    raw = list(trainer.train_loader)
    assert len(seen["Student"]) == len(raw) == len(calls) == 4
    for step, ((images, labels), t_in, s_in, (outputs, mixed, hard)) in enumerate(
            zip(raw, seen["Teacher"], seen["Student"], calls), start=1):
        assert np.array_equal(t_in, s_in)
        expected, _ = trainer.batch_transform(images, labels, 1, step)
        np.testing.assert_allclose(s_in, expected.numpy(), rtol=1e-6, atol=1e-6)
        a, b, lam = mixed.a.numpy(), mixed.b.numpy(), mixed.lam.numpy()
        rows = lam * _ce_rows(outputs["Student"], a, None) + (1 - lam) * _ce_rows(outputs["Student"], b, None)
        keep = ((a >= 0) | (lam <= 0)) & ((b >= 0) | (lam >= 1))
        np.testing.assert_allclose(hard, rows[keep].mean() if keep.any() else 0.0, rtol=1e-4, atol=1e-6)


def test_override_paths_and_key_errors_into_batch_ops(tmp_path):
    import yaml

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"Arch": {"name": "ResNet18"}, "DataLoader": {"Train": {"dataset": {
        "name": "ImageNetDataset", "batch_transform_ops": [{"MixupOperator": {"alpha": 0.2}}]}}}}))
    cfg = load_config(str(path), ["DataLoader.Train.dataset.batch_transform_ops.MixupOperator.alpha=0.4"])
    assert build_batch_transform(cfg["DataLoader"]["Train"]["dataset"]["batch_transform_ops"]).op.alpha == 0.4
    with pytest.raises(ConfigError, match="no list item named 'MixupOperatr'. Did you mean 'MixupOperator'"):
        load_config(str(path), ["DataLoader.Train.dataset.batch_transform_ops.MixupOperatr.alpha=0.4"])
    cfg = load_config(str(path), ["DataLoader.Train.dataset.batch_transform_ops.MixupOperator.alfa=0.4"])
    with pytest.raises(ConfigError, match=r"batch_transform_ops\[0\].MixupOperator has no parameter 'alfa'. "
                                          r"Did you mean 'alpha'"):
        build_batch_transform(cfg["DataLoader"]["Train"]["dataset"]["batch_transform_ops"])
    with pytest.raises(ConfigError, match="FmixOperator.*FMix.*is not implemented"):
        build_batch_transform([{"FmixOperator": {"alpha": 1}}])
    with pytest.raises(ConfigError, match="lists 2 operators"):
        build_batch_transform([{"MixupOperator": {}}, {"CutmixOperator": {}}])
