"""benchmark/compat/paddleclas_configs.py on a fake PaddleClas checkout: ok (with a training step), refused, counts."""
import json
import os

import yaml

from benchmark.compat import paddleclas_configs as bench

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(ROOT, "ppcls_configs", "ImageNet", "Distillation", "PPLCNet_x2_5_ssld.yaml")


def _fake_checkout(tmp_path):
    """A checkout with a small distillation config (teacher ``pretrained: True``), a refused one, a PULC one."""
    base = tmp_path / "pc" / "ppcls" / "configs"
    with open(SHIPPED, encoding="utf-8") as handle:
        cfg = yaml.safe_load(handle)
    for entry in cfg["Arch"]["models"]:
        (key, model), = entry.items()
        model.update(name="MobileNetV3_small_x0_35", class_num=10)
        model.pop("use_ssld", None)
    cfg["Arch"]["class_num"] = 10
    for mode, ops in (("Train", [{"DecodeImage": {}}, {"RandCropImage": {"size": 32}}]),
                      ("Eval", [{"DecodeImage": {}}, {"ResizeImage": {"resize_short": 36}}, {"CropImage": {"size": 32}}])):
        ops.append({"NormalizeImage": {"scale": 0.00392157, "order": ""}})
        cfg["DataLoader"][mode]["dataset"]["transform_ops"] = ops
    write = lambda rel, data: (os.makedirs(os.path.dirname(base / rel), exist_ok=True),  # noqa: E731
                               open(base / rel, "w", encoding="utf-8").write(yaml.safe_dump(data)))
    cfg["Arch"]["models"][1]["Student"]["pretrained"] = "path/to/stage1_best_model_student"  # a placeholder
    write("ImageNet/Distillation/small_ssld.yaml", cfg)
    cfg["Arch"]["models"][1]["Student"].pop("pretrained")
    weightless = json.loads(json.dumps(cfg))  # PULC style: a frozen teacher the user must train first
    weightless["Arch"]["models"][0]["Teacher"].pop("pretrained", None)
    write("PULC/thing/weightless_distillation.yaml", weightless)
    refused = json.loads(json.dumps(cfg))
    refused["Loss"]["Train"] = [{"TripletLoss": {"weight": 1.0}}]  # metric learning: not in ppssld
    write("ImageNet/Distillation/dkd.yaml", refused)
    plain = json.loads(json.dumps(cfg))
    plain["Arch"] = {"name": "MobileNetV3_small_x0_35", "class_num": 10, "pretrained": True}
    plain["Loss"]["Train"] = [{"CELoss": {"weight": 1.0}}]
    write("PULC/thing/plain.yaml", plain)
    multi = json.loads(json.dumps(plain))
    multi["Arch"]["class_num"] = 5
    multi["Loss"] = {"Train": [{"MultiLabelLoss": {"weight": 1.0, "weight_ratio": True, "size_sum": True}}]}
    multi["Metric"] = {"Eval": [{"ATTRMetric": None}]}
    for mode in ("Train", "Eval"):
        multi["DataLoader"][mode]["dataset"].update(name="MultiLabelDataset", label_ratio=True)
    write("PULC/attr/multi.yaml", multi)
    return str(tmp_path / "pc")


def test_benchmark_counts_ok_refused_and_steps(tmp_path):
    checkout = _fake_checkout(tmp_path)
    base = os.path.join(checkout, "ppcls", "configs")
    assert bench.list_configs(checkout) == ["ImageNet/Distillation/dkd.yaml", "ImageNet/Distillation/small_ssld.yaml",
                                            "PULC/attr/multi.yaml", "PULC/thing/plain.yaml",
                                            "PULC/thing/weightless_distillation.yaml"]
    results = bench.measure(base, bench.list_configs(checkout), 120, str(tmp_path / "log.txt"))
    by = {r["config"]: r for r in results}
    ok = by["ImageNet/Distillation/small_ssld.yaml"]
    assert ok["status"] == "ok" and ok["stage"] == "step" and ok["substituted"] == 2 and ok["loss"] > 0, ok
    assert ok["missing_weights"] == ["path/to/stage1_best_model_student"]
    dkd = by["ImageNet/Distillation/dkd.yaml"]
    assert dkd["status"] == "refused" and dkd["stage"] == "validate" and "TripletLoss" in dkd["reason"]
    plain = by["PULC/thing/plain.yaml"]
    assert plain["status"] == "ok" and plain["stage"] == "eval" and plain["loss"] > 0, plain
    weightless = by["PULC/thing/weightless_distillation.yaml"]
    assert weightless["status"] == "ok" and weightless["substituted"] == 1, weightless
    multi = by["PULC/attr/multi.yaml"]
    assert multi["status"] == "ok" and multi["stage"] == "eval" and multi["loss"] > 0, multi
    summary = bench.summarize(results)
    assert summary["counts"]["ImageNet/Distillation"] == {"ok": 1, "refused": 1, "total": 2}
    assert summary["counts"]["PULC"] == {"ok": 3, "total": 3}
    assert summary["causes"] == [("refused: unknown loss 'TripletLoss' in Loss", 1)]
    text = bench.markdown(results, summary)
    assert "| ImageNet/Distillation | 2 | 1 | 1 | 0 | 0 |" in text
    assert "(1 pretrained: True replaced) (weights path not on disk, random weights instead: " \
           "path/to/stage1_best_model_student)" in text
