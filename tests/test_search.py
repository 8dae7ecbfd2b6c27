"""ppssld.recipes.search / tools/search_strategy.py: PaddleClas's greedy search order, validation, dry run and training."""
import os
import subprocess
import sys

import pytest
import yaml

from conftest import loader_cfg, write_images
from ppssld.recipes.search import build_trial, load_search, run_search, train_trial
from ppssld.utils.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _base(data_root, paths, out):
    return {"Global": {"output_dir": out, "device": "cpu", "epochs": 1, "eval_during_train": True,
                       "eval_interval": 1, "print_batch_step": 1, "seed": 3, "image_shape": [3, 32, 32]},
            "Arch": {"name": "MobileNetV3_small_x0_35", "class_num": 4},
            "Loss": {"Train": [{"CELoss": {"weight": 1.0}}], "Eval": [{"CELoss": {"weight": 1.0}}]},
            "Optimizer": {"name": "Momentum", "momentum": 0.9, "lr": {"name": "Cosine", "learning_rate": 0.05}},
            "DataLoader": {"Train": loader_cfg(data_root, paths["train_list.txt"], True),
                           "Eval": loader_cfg(data_root, paths["val_list.txt"], False)},
            "Metric": {"Eval": [{"TopkAcc": {"topk": [1, 2]}}]}}


def _distill(base):
    cfg = dict(base)
    cfg["Arch"] = {"name": "DistillationModel", "freeze_params_list": [True, False],
                   "models": [{"Teacher": {"name": "ResNet18", "class_num": 4}},
                              {"Student": {"name": "MobileNetV3_small_x0_35", "class_num": 4}}]}
    cfg["Loss"] = {"Train": [{"DistillationDMLLoss": {"weight": 1.0, "model_name_pairs": [["Student", "Teacher"]]}}]}
    cfg.pop("Metric")
    return cfg


@pytest.fixture
def tree(tmp_path):
    """``root/cfgs/{base,distill}.yaml`` and ``root/cfgs/task/search.yaml`` naming them from ``root``."""
    data = str(tmp_path / "data")
    paths = write_images(data, 12, 4)
    cfgs = tmp_path / "root" / "cfgs"
    (cfgs / "task").mkdir(parents=True)
    base = _base(data, paths, str(tmp_path / "out"))
    (cfgs / "base.yaml").write_text(yaml.safe_dump(base))
    (cfgs / "distill.yaml").write_text(yaml.safe_dump(_distill(base)))
    return tmp_path


def _search_file(tree, **changes):
    spec = {"base_config_file": "cfgs/base.yaml", "distill_config_file": "cfgs/distill.yaml", "gpus": "0,1",
            "output_dir": str(tree / "search"), "search_times": 2,
            "search_dict": [
                {"search_key": "lrs", "replace_config": ["Optimizer.lr.learning_rate"],
                 "search_values": [0.1, 0.2, 0.3]},
                {"search_key": "resolutions",
                 "replace_config": ["DataLoader.Train.dataset.transform_ops.2.ResizeImage.size",
                                    "DataLoader.Eval.dataset.transform_ops.1.ResizeImage.size"],
                 "search_values": [[32, 32], [40, 40]]},
                {"search_key": "lr_mult_list", "replace_config": ["Arch.lr_mult_list"],
                 "search_values": [[1.0, 1.0], [0.5, 1.0]]}],
            "teacher": {"rm_keys": ["Arch.lr_mult_list"], "search_values": ["ResNet18", "ResNet34"]},
            "final_replace": {"Arch.lr_mult_list": "Arch.models.1.Student.lr_mult_list"}}
    spec.update(changes)
    path = tree / "root" / "cfgs" / "task" / "search.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return str(path)


# metrics the fake trainer reports: lrs 0.2 wins; resolutions tie (the first is kept); [0.5, 1.0] wins;
# the teacher ResNet34 wins
METRICS = {("lrs", "0.1"): [0.5, 0.5], ("lrs", "0.2"): [0.7, 0.6], ("lrs", "0.3"): [0.9, 0.3],
           ("resolutions", "[32, 32]"): [0.4, 0.4], ("resolutions", "[40, 40]"): [0.4, 0.4],
           ("lr_mult_list", "[1.0, 1.0]"): [0.2, 0.2], ("lr_mult_list", "[0.5, 1.0]"): [0.3, 0.3],
           ("teacher", "ResNet18"): [0.1], ("teacher", "ResNet34"): [0.8]}


def test_expansion_follows_paddleclas_greedy_order(tree):
    plan = load_search(_search_file(tree))
    assert plan.base_config == str(tree / "root" / "cfgs" / "base.yaml")  # found from a folder above
    seen = []

    def fake(trial):
        seen.append(trial)
        return 0.0 if trial.stage == "final" else METRICS[(trial.stage, str(trial.value))][trial.repeat]

    outcome = run_search(plan, fake)
    out = str(tree / "search")
    lr, res_t, res_e = ("Optimizer.lr.learning_rate", "DataLoader.Train.dataset.transform_ops.2.ResizeImage.size",
                        "DataLoader.Eval.dataset.transform_ops.1.ResizeImage.size")
    # the reference: PaddleClas's tools/search_strategy.py, written out by hand
    expected = []
    for v, name in ((0.1, "0_1"), (0.2, "0_2"), (0.3, "0_3")):
        for j in (0, 1):
            expected.append(("lrs", [f"{lr}={v}", f"Global.output_dir=\"{out}/lrs_{name}_{j}\""]))
    for v, name in (("[32, 32]", "32_32_"), ("[40, 40]", "40_40_")):
        for j in (0, 1):
            expected.append(("resolutions", [f"{lr}=0.2", f"{res_t}={v}", f"{res_e}={v}",
                                             f"Global.output_dir=\"{out}/resolutions_{name}{j}\""]))
    for v, name in (("[1.0, 1.0]", "1_0_1_0_"), ("[0.5, 1.0]", "0_5_1_0_")):
        for j in (0, 1):
            expected.append(("lr_mult_list", [f"{lr}=0.2", f"{res_t}=[32, 32]", f"{res_e}=[32, 32]",
                                              f"Arch.lr_mult_list={v}",
                                              f"Global.output_dir=\"{out}/lr_mult_list_{name}{j}\""]))
    for t in ("ResNet18", "ResNet34"):  # rm_keys drops Arch.lr_mult_list from the teacher trials
        expected.append(("teacher", [f"{lr}=0.2", f"{res_t}=[32, 32]", f"{res_e}=[32, 32]", f"Arch.name=\"{t}\"",
                                     f"Global.output_dir=\"{out}/teacher_{t}_0\""]))
    expected.append(("final", [f"{lr}=0.2", f"{res_t}=[32, 32]", f"{res_e}=[32, 32]",
                               "Arch.models.1.Student.lr_mult_list=[0.5, 1.0]",
                               "Arch.models.0.Teacher.name=\"ResNet34\"",
                               f"Arch.models.0.Teacher.pretrained=\"{out}/teacher_ResNet34_0/ResNet34/best_model\"",
                               f"Global.output_dir=\"{out}/search_res\""]))
    assert [(t.stage, t.overrides) for t in seen] == expected
    assert seen[-1].config_file.endswith("distill.yaml") and seen[0].config_file.endswith("base.yaml")
    assert {k: r["best"] for k, r in outcome["results"].items()} == {
        "lrs": 0.2, "resolutions": [32, 32], "lr_mult_list": [0.5, 1.0], "teacher": "ResNet34"}
    final = seen[-1].load()  # a fresh config: the overrides parse back to the values
    assert final["Arch"]["models"][1]["Student"]["lr_mult_list"] == [0.5, 1.0]
    assert final["DataLoader"]["Train"]["dataset"]["transform_ops"][2]["ResizeImage"]["size"] == [32, 32]


def test_udml_and_no_teacher(tree):
    plan = load_search(_search_file(tree, teacher={"algorithm": "udml"}, search_times=1))
    seen = []
    run_search(plan, lambda t: seen.append(t) or (0.0 if t.stage == "final" else METRICS[(t.stage, str(t.value))][0]))
    assert "Arch.models.0.Teacher.lr_mult_list=[0.5, 1.0]" in seen[-1].overrides
    plan = load_search(_search_file(tree, teacher=None, search_times=1))
    outcome = run_search(plan, lambda t: 0.0)
    assert outcome["final"] is None and len(outcome["trials"]) == 3 + 2 + 2  # no teacher: no final run


def test_a_renamed_folder_falls_back_to_the_file_beside_the_search_file_with_a_warning(tree, caplog):
    beside = tree / "root" / "cfgs" / "task" / "base.yaml"
    beside.write_text((tree / "root" / "cfgs" / "base.yaml").read_text())
    plan = load_search(_search_file(tree, base_config_file="cfgs/old_name/base.yaml", teacher=None))
    assert plan.base_config == str(beside)
    assert any("'cfgs/old_name/base.yaml' does not exist; using" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("changes,message", [
    ({"search_dic": []}, r"unknown key 'search_dic'. Did you mean 'search_dict'"),
    ({"search_dict": [{"search_key": "res", "replace_config": ["DataLoader.Train.dataset.transform_ops.1."
                                                               "ResizeImage.size"], "search_values": [[8, 8]]}]},
     r"search\.yaml: search_dict\[0\] \(res\)\.replace_config\[0\]: 'DataLoader\.Train\.dataset\.transform_ops\.1\."
     r"ResizeImage\.size' is not a path of the base config"),
    ({"search_dict": [{"search_key": "lrs", "replace_config": ["Optimiser.lr"], "search_values": [1]}]},
     r"'Optimiser\.lr' is not a path of the base config: .*Did you mean 'Optimizer'"),
    ({"search_dict": [{"search_key": "lrs", "replace_configs": ["Optimizer.lr"]}]},
     r"search_dict\[0\]: unknown key 'replace_configs'. Did you mean 'replace_config'"),
    ({"base_config_file": "cfgs/nope.yaml"}, r"base_config_file: config file 'cfgs/nope.yaml' not found"),
    ({"teacher": {"algorithm": "kd"}}, r"teacher.algorithm must be one of skl-ugi, udml"),
])
def test_bad_search_files_are_clean_errors(tree, changes, message):
    with pytest.raises(ConfigError, match=message):
        load_search(_search_file(tree, **changes))


def test_dry_run_builds_every_trial_and_real_run_picks_by_eval_metric(tree):
    plan = load_search(_search_file(tree, search_times=1, search_dict=[
        {"search_key": "lrs", "replace_config": ["Optimizer.lr.learning_rate"], "search_values": [0.0, 0.05]}]))
    outcome = run_search(plan, build_trial)
    assert [t.stage for t in outcome["trials"]] == ["lrs", "lrs", "teacher", "teacher", "final"]
    plan.algorithm = None  # train only the lrs stage: learning rate 0 cannot beat 0.05 on this data
    scores = {}
    outcome = run_search(plan, lambda t: scores.setdefault(t.value, train_trial(t)))
    assert os.path.isfile(os.path.join(str(tree / "search"), "lrs_0_05_0", "MobileNetV3_small_x0_35",
                                       "best_model.pdparams"))
    assert outcome["results"]["lrs"]["best"] == (0.05 if scores[0.05] > scores[0.0] else 0.0)


def test_tool_reports_a_bad_path_without_traceback(tree):
    path = _search_file(tree, search_dict=[{"search_key": "x", "replace_config": ["Global.nope.deeper"],
                                            "search_values": [1]}])
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "search_strategy.py"), "-c", path,
                           "--dry-run"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "error:" in proc.stderr and "search_dict[0] (x).replace_config[0]: 'Global.nope.deeper'" in proc.stderr
    assert "Traceback" not in proc.stderr


PADDLECLAS = os.environ.get("PADDLECLAS_DIR", "/work/paddleclas")


def _effective(overrides):
    """``{path: value}`` of ``k=v`` overrides (last wins), without the output folders."""
    eff = {}
    for item in overrides:
        key, raw = item.split("=", 1)
        eff[key] = yaml.safe_load(raw)
    eff.pop("Global.output_dir", None)
    return eff


def _score(eff, repeat):
    lr = {0.1: 0.5, 0.2: 0.65, 0.3: 0.9 if repeat == 0 else 0.3}[eff["Optimizer.lr.learning_rate"]]
    mult = 0.1 if eff.get("Arch.lr_mult_list") == [0.5, 1.0] else 0.0
    return lr + mult + (0.3 if eff.get("Arch.name") == "ResNet34" else 0.0)


@pytest.mark.skipif(not os.path.isfile(os.path.join(PADDLECLAS, "tools", "search_strategy.py")),
                    reason=f"PaddleClas's source is not at {PADDLECLAS} (set PADDLECLAS_DIR)")
def test_trials_equal_paddleclas_search_strategy_run_with_fake_training(tree, monkeypatch):
    import argparse
    import importlib.util

    path = _search_file(tree, base_config_file=str(tree / "root" / "cfgs" / "base.yaml"),
                        distill_config_file=str(tree / "root" / "cfgs" / "distill.yaml"))
    spec = importlib.util.spec_from_file_location("pc_search_strategy",
                                                  os.path.join(PADDLECLAS, "tools", "search_strategy.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    programs = []

    class FakeProcess:
        def __init__(self, program):
            programs.append(list(program))

        def communicate(self):
            return None

    def fake_result(log_dir):
        program = programs[-1]
        overrides = [program[i + 1] for i, item in enumerate(program) if item == "-o"]
        return _score(_effective(overrides), int(os.path.dirname(log_dir).rsplit("_", 1)[1]))

    monkeypatch.setattr(module.subprocess, "Popen", FakeProcess)
    monkeypatch.setattr(module, "get_result", fake_result)
    monkeypatch.setattr(module.config, "parse_args", lambda: argparse.Namespace(config=path, override=[]))
    module.search_strategy()
    theirs = [(os.path.basename(p[p.index("-c") + 1]), _effective([p[i + 1] for i, x in enumerate(p) if x == "-o"]))
              for p in programs]
    ours = [(os.path.basename(t.config_file), _effective(t.overrides))
            for t in run_search(load_search(path), lambda t: _score(_effective(t.overrides), t.repeat))["trials"]]
    assert len(ours) == 3 * 2 + 2 * 2 + 2 * 2 + 2 + 1
    assert ours == theirs
