"""The input fuzzer's seeded subset (the full sweep is benchmark/robustness/fuzz_inputs.py): bad values in every key of the
shipped and PaddleClas fixture configs, in a tiny project trained for one epoch, and in the arguments of every
tools/*.py and deploy/python/predict_cls.py (4 cases per tool). Each case must be accepted or refused with a
ppssld error (status 2, one error line); a traceback or a hang fails, listing the cases."""
import os
import time

import pytest

from tests.fuzz_harness import (CLI_ARGUMENTS, Case, cli_argv, cli_cases, config_cases, config_files, run_cli_case,
                                run_config_case, run_train_case, sample, tiny_project)

SEED = 29
CONFIG_CASES, TRAIN_CASES, CLI_CASES_PER_TOOL = 400, 24, 4


def _failures(outcomes):
    return [f"{o.case.kind} {os.path.basename(o.case.target)} {o.case.key}={o.case.text!r}: {o.result}\n{o.detail}"
            for o in outcomes if o.result in ("crash", "hang")]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return tiny_project(str(tmp_path_factory.mktemp("fuzz")))


def test_config_keys_of_every_shipped_and_fixture_config():
    cases = sample([c for path in config_files() for c in config_cases(path)], CONFIG_CASES, SEED)
    outcomes = [run_config_case(c) for c in cases]
    assert len(outcomes) == CONFIG_CASES
    assert not _failures(outcomes), "\n\n".join(_failures(outcomes))
    assert sum(o.result == "refused" for o in outcomes) > CONFIG_CASES // 4  # the bad values do reach the checks


@pytest.mark.timeout(600)
def test_tiny_project_keys_through_one_epoch(project):
    cases = sample(config_cases(project["config"], kind="train"), TRAIN_CASES, SEED)
    outcomes = [run_train_case(c, project["config"]) for c in cases]
    assert not _failures(outcomes), "\n\n".join(_failures(outcomes))


@pytest.mark.timeout(600)
def test_tool_arguments(project, tmp_path):
    cases = [c for tool, args in CLI_ARGUMENTS.items() for c in sample(cli_cases(tool, args), CLI_CASES_PER_TOOL, SEED)]
    outcomes = [run_cli_case(c, cli_argv(c, project, str(tmp_path / f"out{i}"))) for i, c in enumerate(cases)]
    assert not _failures(outcomes), "\n\n".join(_failures(outcomes))


def test_the_harness_calls_a_bare_exception_a_crash_and_a_stall_a_hang(monkeypatch, tmp_path):
    """The fuzzer can fail: a library ValueError is a crash, a stall past the limit a hang, a ppssld error a
    refusal that names its key."""
    import ppssld.engine.builder as builder
    from ppssld.utils.errors import ConfigError

    path = config_files()[0]
    case = Case("config", path, "Global.epochs", "zero", "3")
    monkeypatch.setattr(builder, "validate", lambda config: (_ for _ in ()).throw(ValueError("bare")))
    assert run_config_case(case).result == "crash"
    monkeypatch.setattr(builder, "validate", lambda config: time.sleep(5))
    assert run_config_case(case, seconds=0.5).result == "hang"
    monkeypatch.setattr(builder, "validate", lambda config: (_ for _ in ()).throw(ConfigError("Global.epochs bad")))
    refused = run_config_case(case)
    assert refused.result == "refused" and refused.named


PPLCNET = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "ppcls_configs", "ImageNet",
                       "Distillation", "PPLCNet_x2_5_ssld.yaml")


@pytest.mark.parametrize("target, key, text, needle", [
    (PPLCNET, "Optimizer.regularizer.name", "[]", "unknown regularizer [] at Optimizer.regularizer.name"),
    (PPLCNET, "DataLoader.Train.dataset.name", "{}", "unknown dataset {}"),
    (PPLCNET, "DataLoader.Train.dataset.transform_ops.3.NormalizeImage.order", "1e12", "order must be 'chw', 'hwc'"),
    (PPLCNET, "DataLoader.Train.dataset.transform_ops.3.NormalizeImage.mean", "1e12", "mean must be a list of 3"),
    (PPLCNET, "Optimizer.lr.warmup_epoch", ".nan", "warmup_epoch must be a finite number >= 0, got nan"),
    ("tiny", "Arch.name", "-1", "Arch.name must be a model name"),
    ("tiny", "Arch", "1e12", "Arch must be a mapping"),
    ("tiny", "Arch.models.1.Student.class_num", "'x'", "Arch.models[1].Student.class_num must be a whole number"),
    ("tiny", "Arch.models.0.Teacher.name", "[]", "Arch.models[0].Teacher.name must be a model name"),
])
def test_what_the_fuzzer_found_is_refused_naming_the_key(project, target, key, text, needle):
    outcome = run_config_case(Case("config", project["config"] if target == "tiny" else target, key, "found", text))
    assert outcome.result == "refused" and needle in outcome.detail, outcome


@pytest.mark.parametrize("key, text, needle", [("--workers", "0", "--workers must be an int >= 1, got 0"),
                                               ("--batch-size", "0", "--batch-size must be an int >= 1"),
                                               ("--chunk-size", "0", "--chunk-size must be an int >= 1")])
def test_cache_tool_counts_below_1_are_refused(project, tmp_path, key, text, needle):
    case = Case("cli", "tools/cache_soft_labels.py", key, "zero", text)
    outcome = run_cli_case(case, cli_argv(case, project, str(tmp_path / "out")))
    assert outcome.result == "refused" and outcome.named and needle in outcome.detail, outcome


@pytest.mark.parametrize("tool, key, text, needle", [
    ("tools/prepare_data.py", "--seed", "-1", "--seed (the labeled/unlabeled split's seed) must be an int >= 0, got -1"),
    ("tools/prepare_data.py", "--out", "", "--out must name the output folder, got ''"),
    ("tools/prepare_data.py", "--out", "a file.txt", "cannot create the output folder a file.txt: File exists"),
    ("tools/export_model.py", "--save_dir", "a file.txt", "cannot create the output folder a file.txt: File exists"),
])
def test_what_the_fuzzer_found_in_the_other_tools_is_refused(project, tmp_path, tool, key, text, needle):
    """Each was a raw numpy ValueError / FileExistsError / FileNotFoundError traceback."""
    case = Case("cli", tool, key, "found", text)
    outcome = run_cli_case(case, cli_argv(case, project, str(tmp_path / "out")))
    assert outcome.result == "refused" and needle in outcome.detail, outcome


def test_every_tool_and_deploy_script_has_its_arguments_fuzzed():
    """Every tools/*.py and deploy/python/*.py is in CLI_ARGUMENTS, except the two whose first real work is the
    whole pipeline or a server that never returns (see benchmark/results/robustness/fuzz_inputs.md)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    scripts = {f"{folder}/{n}" for folder in ("tools", "deploy/python") for n in os.listdir(os.path.join(root, folder))
               if n.endswith(".py") and n != "__init__.py"}
    assert scripts - set(CLI_ARGUMENTS) == {"tools/ssld_pipeline.py", "deploy/python/hub_serving_local.py"}
