"""An ensemble of frozen teachers (``Arch.ensemble``) as one teacher: online, through the losses, in its members'
engines, from the soft-label cache, in mining and in the teacher's evaluation; and the refusals."""
import copy
import logging

import numpy as np
import paddle
import pytest

from ppssld.cache.generate import generate
from ppssld.cache.reader import SoftLabelCache
from ppssld.engine.builder import build_eval_pieces, build_full_model, build_trainer, prepare_runtime, validate
from ppssld.engine.teacher_report import report_frozen_models
from ppssld.loss import build_loss
from ppssld.mining.score import load_scores, score_pool
from ppssld.teacher.frozen import TeacherEnsemble, teacher_from_config
from ppssld.data.transforms import build_transforms
from ppssld.teacher.choose import EngineTeacher
from ppssld.teacher.engines import softmax_gap
from ppssld.utils.errors import ConfigError
from tests.conftest import distill_config, save_random_backbone
from tests.test_teacher_input import STUDENT_OPS, views_of

WEIGHTS = [3.0, 1.0]  # normalised: 0.75, 0.25


def ensemble_config(root, paths, a, b, out):
    """ResNet18 (its own 48x48 input, ImageNet mean/std) + MobileNetV3 -> one teacher named Teacher."""
    cfg = distill_config(root, paths, a, out)
    cfg["DataLoader"]["Train"]["dataset"]["transform_ops"] = copy.deepcopy(STUDENT_OPS)
    cfg["Global"]["eval_during_train"] = False
    cfg["Arch"]["teacher_engine"] = "dygraph"
    cfg["Arch"]["models"] = [
        {"TeacherA": {"name": "ResNet18", "class_num": 4, "pretrained": a,
                      "input": {"size": [48, 48], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}}},
        {"TeacherB": {"name": "MobileNetV3_small_x0_35", "class_num": 4, "pretrained": b}},
        {"Student": {"name": "MobileNetV3_small_x0_35", "class_num": 4}}]
    cfg["Arch"]["freeze_params_list"] = [True, True, False]
    cfg["Arch"]["ensemble"] = {"name": "Teacher", "members": ["TeacherA", "TeacherB"], "weights": list(WEIGHTS)}
    return cfg


@pytest.fixture
def setup(tiny_data, tmp_path):
    root, paths = tiny_data
    a = save_random_backbone(str(tmp_path / "a.pdparams"), "ResNet18", class_num=4, seed=1)
    b = save_random_backbone(str(tmp_path / "b.pdparams"), "MobileNetV3_small_x0_35", class_num=4, seed=3)
    return ensemble_config(root, paths, a, b, str(tmp_path / "out")), tmp_path


def softmax(x, t=1.0):
    e = np.exp((x - x.max(1, keepdims=True)) / t)
    return e / e.sum(1, keepdims=True)


def mean_probs(out, weights=WEIGHTS, t=1.0):
    w = np.array(weights, np.float64) / sum(weights)
    return w[0] * softmax(out["TeacherA"].numpy().astype(np.float64), t) + \
        w[1] * softmax(out["TeacherB"].numpy().astype(np.float64), t)


def test_the_online_target_is_the_log_of_the_weighted_mean_softmax(setup):
    cfg, _ = setup
    model = build_full_model(cfg)
    batch = paddle.to_tensor(views_of(cfg, STUDENT_OPS, 1, range(8)))
    out = model(batch)
    assert sorted(out) == ["Student", "Teacher", "TeacherA", "TeacherB"]
    np.testing.assert_allclose(out["Teacher"].numpy(), np.log(mean_probs(out)), atol=1e-5)
    assert out["Teacher"].stop_gradient
    warm = copy.deepcopy(cfg)
    warm["Arch"]["ensemble"].update(temperature=3.0, weights=[0.0, 2.0])  # a member of weight 0 adds nothing
    out = build_full_model(warm)(batch)
    np.testing.assert_allclose(out["Teacher"].numpy(), np.log(softmax(out["TeacherB"].numpy(), 3.0)), atol=1e-5)


@pytest.mark.parametrize("loss, temperature", [("JSDivLoss", 1.0), ("JSDivLoss", 2.0), ("KLDivLoss", 4.0),
                                               ("KLDivLoss", 1.0)])
def test_js_and_kl_with_an_ensemble_target_match_numpy(setup, loss, temperature):
    """The losses take the ensemble's log p as logits: softmax(log p / T) = p ** (1/T) renormalised."""
    cfg, _ = setup
    out = build_full_model(cfg)(paddle.to_tensor(views_of(cfg, STUDENT_OPS, 1, range(8))))
    fn = build_loss([{loss: {"weight": 1.0, "temperature": temperature,
                             "model_name_pairs": [["Student", "Teacher"]]}}])
    got = float(fn(out, None)["loss"])
    p = softmax(out["Student"].numpy().astype(np.float64), temperature)
    q = mean_probs(out) ** (1.0 / temperature)
    q /= q.sum(1, keepdims=True)
    kl = lambda a, b: (a * (np.log(a) - np.log(b))).sum(1)  # noqa: E731
    if loss == "JSDivLoss":
        m = (p + q) / 2
        want = (0.5 * kl(p, m) + 0.5 * kl(q, m)).mean()
    else:
        want = temperature ** 2 * kl(q, p).mean()
    assert abs(got - want) < 1e-5 * max(1.0, abs(want)), (got, want)


def test_each_member_runs_in_its_own_engine(setup):
    cfg, _ = setup
    mixed = copy.deepcopy(cfg)
    mixed["Arch"].pop("teacher_engine")  # auto: Paddle Inference on CPU ...
    mixed["Arch"]["models"][0]["TeacherA"]["teacher_engine"] = "dygraph"  # ... except where a member says
    engine_model, dygraph_model = build_full_model(mixed), build_full_model(cfg)
    assert isinstance(engine_model.TeacherB, EngineTeacher) and not isinstance(engine_model.TeacherA, EngineTeacher)
    batch = paddle.to_tensor(views_of(cfg, STUDENT_OPS, 1, range(6)))
    assert softmax_gap(engine_model(batch)["Teacher"].numpy(), dygraph_model(batch)["Teacher"].numpy()) <= 1e-4
    bad = copy.deepcopy(mixed)
    bad["Arch"]["models"][1]["TeacherB"]["teacher_engine"] = "tensorrt"
    with pytest.raises(ConfigError, match=r"Arch.models\[1\].TeacherB.teacher_engine must be one of auto"):
        build_full_model(bad)


def test_the_cache_stores_the_ensembles_target_and_trains_from_it(setup):
    cfg, tmp = setup
    online = build_full_model(cfg)(paddle.to_tensor(views_of(cfg, STUDENT_OPS, 1, range(32))))["Teacher"].numpy()
    generate(cfg, str(tmp / "exact"), views=1, topk=4, chunk_size=16, prob_dtype="float32")
    generate(cfg, str(tmp / "top2"), views=1, topk=2, chunk_size=16, prob_dtype="float32")
    exact, top2 = SoftLabelCache(str(tmp / "exact")), SoftLabelCache(str(tmp / "top2"))
    assert exact.values == "logits" and top2.values == "probs"
    index = np.arange(32)
    assert np.abs(exact.teacher_output(0, index) - online).max() < 1e-5  # view 0 = epoch 1's draws
    kept = np.sort(np.exp(online), axis=1)[:, ::-1][:, :2]
    assert np.abs(np.sort(top2.distribution(0, index), axis=1)[:, ::-1][:, :2] - kept).max() < 1e-5
    assert exact.manifest["teacher_arch"]["ensemble"]["weights"] == [0.75, 0.25]
    assert len(exact.manifest["teacher_weights"]) == 2 and "TeacherA" in exact.manifest["teacher_inputs"]
    cached = copy.deepcopy(cfg)
    cached["Global"]["soft_label_cache"] = str(tmp / "exact")
    trainer = build_trainer(cached)
    assert not any(k.startswith(("TeacherA.", "TeacherB.")) for k in trainer.model.state_dict())
    trainer.fit()
    stale = copy.deepcopy(cached)
    stale["Arch"]["ensemble"]["weights"] = [1.0, 1.0]
    stale["Global"]["output_dir"] += "_stale"
    with pytest.raises(ConfigError, match="stale: it was built with other teacher_arch"):
        build_trainer(stale)
    member = copy.deepcopy(cached)
    member["Global"]["output_dir"] += "_member"
    member["Loss"]["Train"].append({"DistillationDMLLoss": {"weight": 1.0, "model_name_pairs": [["Student",
                                                                                                  "TeacherA"]]}})
    with pytest.raises(ConfigError, match=r"names \['TeacherA'\], members of the ensemble Teacher"):
        build_trainer(member)


def test_mining_scores_with_the_ensemble(setup):
    cfg, tmp = setup
    teacher = teacher_from_config(cfg)
    assert isinstance(teacher, TeacherEnsemble) and "input 48x48" in teacher.description
    eval_ops = cfg["DataLoader"]["Eval"]["dataset"]["transform_ops"]
    views = views_of(cfg, eval_ops, 1, range(24))
    out = build_full_model(cfg)(paddle.to_tensor(views))
    want = mean_probs(out)
    assert np.abs(teacher(views)[0] - want).max() < 1e-5
    assert np.abs(teacher(views, logits=True)[0] - out["Teacher"].numpy()).max() < 1e-5
    with pytest.raises(ConfigError, match="an ensemble has no single penultimate feature"):
        teacher(views, features=True)
    paths = [f"images/{i:05d}.png" for i in range(24)]
    score_pool(teacher, paths, cfg["DataLoader"]["Eval"]["dataset"]["image_root"],
               build_transforms(eval_ops, "eval"), str(tmp / "scores"), topn=4)
    scores = load_scores(str(tmp / "scores"))
    np.testing.assert_array_equal(scores.cls[:, 0], want.argmax(1))
    assert np.abs(scores.prob[:, 0] - want.max(1)).max() < 1e-5
    report = teacher.report()
    assert [m["name"] for m in report["members"]] == ["TeacherA", "TeacherB"] and report["members"][0]["weight"] == 0.75


def _predictions(model, loader, names):
    preds, labels = {n: [] for n in names}, []
    for images, batch_labels in loader:
        out = model(images)
        for name in names:
            preds[name].append(out[name].numpy().argmax(1))
        labels.append(batch_labels.numpy().reshape(-1))
    return {n: np.concatenate(v) for n, v in preds.items()}, np.concatenate(labels)


def test_each_teachers_top1_and_the_ensembles_are_reported(setup, caplog):
    cfg, tmp = setup
    prepare_runtime(cfg)
    model = build_full_model(cfg)
    names = ["TeacherA", "TeacherB", "Teacher"]
    loader, _, _ = build_eval_pieces(cfg)
    first, _ = _predictions(model, loader, names)
    # labels that each random teacher half gets right, so the three top-1s are not all chance
    labels = np.where(np.arange(len(first["TeacherA"])) < 12, first["TeacherA"], first["TeacherB"])
    rows = [f"images/{i:05d}.png {label}" for i, label in enumerate(labels)]
    (tmp / "val_relabelled.txt").write_text("\n".join(rows) + "\n")
    cfg["DataLoader"]["Eval"]["dataset"]["cls_label_path"] = str(tmp / "val_relabelled.txt")
    loader, _, _ = build_eval_pieces(cfg)
    logging.getLogger("ppssld").propagate = True
    with caplog.at_level(logging.INFO, logger="ppssld"):
        reports = report_frozen_models(cfg, model, loader)
        again = report_frozen_models(cfg, model, loader)  # the ensemble's record is reused like a member's
    assert sorted(reports) == sorted(names)
    preds, truth = _predictions(model, loader, names)
    for name in names:
        assert abs(reports[name]["top1"] - float((preds[name] == truth).mean())) < 1e-6, name
        assert again[name]["top1"] == reports[name]["top1"]
    assert reports["TeacherA"]["top1"] >= 0.5 and reports["TeacherB"]["top1"] >= 0.5
    assert "teacher ensemble Teacher: top-1" in caplog.text
    assert "frozen model Teacher: top-1" in caplog.text and "(reused from" in caplog.text


@pytest.mark.parametrize("change, message", [
    (lambda a: a["models"][1]["TeacherB"].update(class_num=5),
     r"TeacherA \(Arch.models\[0\]\) predicts 4 classes \(its class_num\) but TeacherB \(Arch.models\[1\]\) 5"),
    (lambda a: a["ensemble"].update(weights=[1.0]), r"Arch.ensemble.weights must list one weight per member \(2\)"),
    (lambda a: a["ensemble"].update(weights=[1.0, -0.5]), "Arch.ensemble.weights must be finite numbers >= 0"),
    (lambda a: a["ensemble"].update(weights=[0, 0.0]), "Arch.ensemble.weights are all zero"),
    (lambda a: a["ensemble"].update(temperature=0), "Arch.ensemble.temperature must be a number > 0"),
    (lambda a: a["ensemble"].update(members=["TeacherA"]), "Arch.ensemble.members must list at least two"),
    (lambda a: a["ensemble"].update(members=["TeacherA", "Techer"]), "'Techer' is not among Arch.models"),
    (lambda a: a["ensemble"].update(members=["TeacherA", "Student"]),
     r"Student is not frozen.*Arch.freeze_params_list\[2\]: true"),
    (lambda a: a["ensemble"].update(name="TeacherB"), "Arch.ensemble.name 'TeacherB' is already an Arch.models"),
    (lambda a: a["ensemble"].update(member=["TeacherA"]), "unknown key Arch.ensemble.member. Did you mean 'members'"),
    (lambda a: a.update(ensembel={}), "unknown key Arch.ensembel for DistillationModel. Did you mean 'ensemble'"),
])
def test_refusals_name_the_key(setup, change, message):
    cfg, _ = setup
    change(cfg["Arch"])
    with pytest.raises(ConfigError, match=message):
        validate(cfg)
        build_full_model(cfg)


def test_a_loss_on_the_ensembles_raw_logits_is_refused(setup):
    cfg, _ = setup
    cfg["Loss"]["Train"] = [{"DistillationDistanceLoss": {"weight": 1.0, "model_name_pairs": [["Student",
                                                                                               "Teacher"]]}}]
    with pytest.raises(ConfigError, match="DistillationDistanceLoss: an Arch.ensemble's output is the log of its "
                                          "members' mean probability"):
        build_trainer(cfg)
