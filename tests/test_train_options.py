"""Training options: Global.update_freq (gradient accumulation), EMA (formula, PaddleClas checkpoint names,
resume), use_sync_bn (CPU warning), ReduceOnPlateau fed by evaluation, search.yaml refusal."""
import copy
import logging

import numpy as np
import paddle
import pytest
import yaml

from ppssld.utils.config import load_config
from ppssld.engine.builder import update_frequency
from ppssld.engine.checkpoint import Checkpointer
from ppssld.engine.ema import ModelEMA, build_ema
from ppssld.engine.sync_bn import apply_sync_bn, wants_sync_bn
from ppssld.engine.trainer import Trainer
from ppssld.loss import build_loss
from ppssld.optim import build_optimizer
from ppssld.utils.errors import ConfigError, WeightsError


class Loader(list):
    """A list of (images, labels) batches standing in for the DataLoader."""


def batches(sizes, seed=0):
    rng = np.random.default_rng(seed)
    out = Loader()
    for n in sizes:
        out.append((paddle.to_tensor(rng.normal(size=(n, 6)).astype(np.float32)),
                    paddle.to_tensor(rng.integers(0, 3, n).astype(np.int64))))
    return out


def merged(loader, group):
    """Concatenate every ``group`` consecutive batches into one."""
    out = Loader()
    for i in range(0, len(loader) - len(loader) % group, group):
        chunk = loader[i:i + group]
        out.append((paddle.concat([b[0] for b in chunk]), paddle.concat([b[1] for b in chunk])))
    return out


def make_trainer(tmp_path, loader, update_freq=1, lr=None, ema=None, eval_loader=None, metrics=None, seed=3):
    paddle.seed(seed)
    model = paddle.nn.Sequential(paddle.nn.Linear(6, 8), paddle.nn.ReLU(), paddle.nn.Linear(8, 3))
    lr = lr or {"name": "Cosine", "learning_rate": 0.5, "warmup_epoch": 1}
    optimizer, scheduler = build_optimizer(
        {"name": "Momentum", "momentum": 0.9, "lr": lr, "regularizer": {"name": "L2", "coeff": 1e-3}},
        model, epochs=2, steps_per_epoch=len(loader) // update_freq)
    ema_obj = ModelEMA(model, ema) if ema is not None else None
    return Trainer(model, loader, None, build_loss([{"CELoss": {"weight": 1.0}}]), optimizer, scheduler,
                   Checkpointer(str(tmp_path / "ckpt")), 2, eval_loader=eval_loader, eval_metrics=metrics,
                   update_freq=update_freq, ema=ema_obj, print_batch_step=100)


def params(model):
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}


def test_accumulation_equals_the_larger_batch(tmp_path):
    small = batches([4] * 7)  # 7 micro-batches of 4: 3 updates of 2, the 7th dropped (PaddleClas)
    acc = make_trainer(tmp_path / "a", small, update_freq=2)
    big = make_trainer(tmp_path / "b", merged(small, 2))
    for epoch in (1, 2):
        acc.train_one_epoch(epoch)
        big.train_one_epoch(epoch)
    for key, value in params(big.model).items():
        np.testing.assert_allclose(params(acc.model)[key], value, rtol=1e-5, atol=1e-6)
    # the schedule steps once per optimizer update (3 per epoch), warmup included
    assert acc.scheduler.last_epoch == big.scheduler.last_epoch == 6
    assert acc.global_step == 12 and acc.optimizer.get_lr() == pytest.approx(big.optimizer.get_lr())


def test_update_frequency_checks_and_falls_back(caplog):
    assert update_frequency({"Global": {"update_freq": 4}}, 10) == 4
    assert update_frequency({"Global": {}}, 10) == 1
    with caplog.at_level(logging.WARNING, logger="ppssld.engine.builder"):
        assert update_frequency({"Global": {"update_freq": 8}}, 3) == 1
    assert any("exceeds the 3 batches" in r.getMessage() for r in caplog.records)
    with pytest.raises(ConfigError, match="Global.update_freq must be an int >= 1"):
        update_frequency({"Global": {"update_freq": 0}}, 10)


def test_ema_follows_the_formula_every_update(tmp_path):
    loader = batches([4] * 4, seed=1)
    trainer = make_trainer(tmp_path, loader, update_freq=2, ema=0.9)
    expected = params(trainer.model)
    orig_step = trainer.optimizer.step

    def step_and_track():
        orig_step()
        for k, v in trainer.model.state_dict().items():
            expected[k] = 0.9 * expected[k] + 0.1 * v.numpy()

    trainer.optimizer.step = step_and_track
    trainer.train_one_epoch(1)
    got = params(trainer.ema.module)
    for key, value in expected.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-5, atol=1e-7)
    assert not np.allclose(got["2.weight"], params(trainer.model)["2.weight"])
    with pytest.raises(ConfigError, match=r"EMA.decay must be a number in \[0, 1\)"):
        build_ema({"EMA": {"decay": 1.5}}, trainer.model)
    with pytest.raises(ConfigError, match="unknown key EMA.dekay"):
        build_ema({"EMA": {"dekay": 0.9}}, trainer.model)


def test_ema_checkpoint_names_and_resume(tmp_path):
    loader = batches([4] * 2, seed=2)
    trainer = make_trainer(tmp_path, loader, ema=0.5)
    trainer.fit()
    prefix = str(tmp_path / "ckpt" / "latest")
    # PaddleClas's names: .pdparams = EMA weights, .pdema = trained weights
    for key, value in params(trainer.ema.module).items():
        np.testing.assert_array_equal(paddle.load(prefix + ".pdparams")[key].numpy(), value)
    for key, value in params(trainer.model).items():
        np.testing.assert_array_equal(paddle.load(prefix + ".pdema")[key].numpy(), value)
    fresh = make_trainer(tmp_path / "other", loader, ema=0.5, seed=9)
    trainer.best_metric_ema = 0.25
    trainer._save("latest", 2, 0.2)
    fresh.resume(prefix)
    assert fresh.best_metric_ema == 0.25 and fresh.start_epoch == 3
    for key, value in params(trainer.model).items():
        np.testing.assert_array_equal(params(fresh.model)[key], value)
        np.testing.assert_array_equal(params(fresh.ema.module)[key], params(trainer.ema.module)[key])
    # without EMA: the trained weights are resumed (never the EMA ones), with a warning
    plain = make_trainer(tmp_path / "plain", loader, seed=9)
    plain.resume(prefix)
    for key, value in params(trainer.model).items():
        np.testing.assert_array_equal(params(plain.model)[key], value)
    # an EMA run cannot resume a checkpoint saved without EMA
    plain.checkpointer.save("noema", plain.model, plain.optimizer, {"epoch": 1})
    with pytest.raises(WeightsError, match=r"\.pdema .*missing"):
        make_trainer(tmp_path / "x", loader, ema=0.5).resume(str(tmp_path / "plain" / "ckpt" / "noema"))


class Plain:
    """A metric that reports a scripted value per evaluation."""
    primary_key = "score"
    summary_keys = ("score",)

    def __init__(self, values):
        self.values, self.i = list(values), -1

    def reset(self):
        self.i += 1

    def update(self, outputs, labels):
        return {}

    def counts(self):
        return np.zeros(1)

    def set_counts(self, counts):
        pass

    def summary(self):
        return {"score": self.values[self.i]}


def test_reduce_on_plateau_is_fed_the_eval_metric(tmp_path):
    loader = batches([4] * 2, seed=4)
    trainer = make_trainer(tmp_path, loader, lr={"name": "ReduceOnPlateau", "learning_rate": 0.1, "mode": "max",
                                                 "patience": 0}, eval_loader=batches([4]), metrics=[Plain([0.5, 0.4])])
    trainer.metric_key = "score"
    trainer.fit()
    assert trainer.best_metric == 0.5 and trainer.best_epoch == 1
    assert trainer.scheduler() == pytest.approx(0.01)  # the second evaluation did not improve


def test_sync_bn_wanted_and_cpu_warning(caplog):
    cfg = {"Arch": {"name": "DistillationModel", "models": [{"Student": {"name": "X", "use_sync_bn": True}}]}}
    assert wants_sync_bn(cfg) and wants_sync_bn({"Global": {"use_sync_bn": True}}) and not wants_sync_bn({})
    model = paddle.nn.Sequential(paddle.nn.Conv2D(3, 4, 3), paddle.nn.BatchNorm2D(4))
    from ppssld.engine import sync_bn
    sync_bn._warned_sync.clear()
    with caplog.at_level(logging.WARNING, logger="ppssld.engine.sync_bn"):
        same = apply_sync_bn({"Global": {"use_sync_bn": True}}, model)
        apply_sync_bn({"Global": {"use_sync_bn": True}}, model)
    assert same is model
    warnings = [r.getMessage() for r in caplog.records if "use_sync_bn" in r.getMessage()]
    assert len(warnings) == 1 and ("SyncBatchNorm needs GPUs" in warnings[0] or "one training process" in warnings[0])


def test_search_yaml_is_refused_precisely(tmp_path):
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump({"base_config_file": "ppcls/configs/PULC/x/PPLCNet_x1_0_search.yaml",
                                    "distill_config_file": "ppcls/configs/PULC/x/PPLCNet_x1_0_distillation.yaml",
                                    "gpus": "0,1", "search_dict": []}))
    with pytest.raises(ConfigError, match=r"search file of PaddleClas tools/search_strategy.py, not a training config.*"
                                          r"base_config_file 'ppcls/configs/PULC/x/PPLCNet_x1_0_search.yaml'"):
        load_config(str(path))


def test_new_global_keys_are_schema_keys(tmp_path):
    path = tmp_path / "c.yaml"
    cfg = {"Global": {"update_freq": 2, "use_sync_bn": True, "use_multilabel": True}, "Arch": {"name": "ResNet18"},
           "EMA": {"decay": 0.999}}
    path.write_text(yaml.safe_dump(cfg))
    assert load_config(str(path))["EMA"] == {"decay": 0.999}
    path.write_text(yaml.safe_dump(dict(copy.deepcopy(cfg), EMA={"dekay": 0.9})))
    with pytest.raises(ConfigError, match="Did you mean 'decay'"):
        load_config(str(path))


def test_distillation_arch_accepts_paddleclas_use_ssld(caplog):
    """PULC table_attribute sets Arch.use_ssld on the DistillationModel; PaddleClas ignores it there."""
    from ppssld.arch import build as arch_build
    arch_build._warned.discard("use_ssld")
    arch = {"name": "DistillationModel", "class_num": 3, "use_ssld": True, "freeze_params_list": [False, False],
            "models": [{"Teacher": {"name": "MobileNetV3_small_x0_35", "class_num": 3}},
                       {"Student": {"name": "MobileNetV3_small_x0_35", "class_num": 3}}]}
    with caplog.at_level(logging.WARNING, logger="ppssld.arch.build"):
        model = arch_build.build_model(arch)
    assert model.names == ["Teacher", "Student"]
    assert any("Arch.use_ssld" in r.getMessage() and "ignores" in r.getMessage() for r in caplog.records)


class ScaledCE(paddle.nn.Layer):
    """A loss with a trainable parameter (as MGD/PEFD connectors), saved beside the model."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = self.create_parameter([1], default_initializer=paddle.nn.initializer.Constant(1.0))

    def forward(self, outputs, labels):
        return {"loss": paddle.nn.functional.cross_entropy(outputs, labels).mean() * self.scale}


def test_ema_with_trainable_loss_parameters_saves_and_resumes_both(tmp_path):
    loader = batches([4] * 2, seed=4)

    def trainer_with_loss(folder, seed):
        paddle.seed(seed)
        model = paddle.nn.Sequential(paddle.nn.Linear(6, 8), paddle.nn.ReLU(), paddle.nn.Linear(8, 3))
        loss = ScaledCE()
        optimizer, scheduler = build_optimizer({"name": "Momentum", "momentum": 0.9, "lr": {"learning_rate": 0.1}},
                                               list(model.named_parameters()) + list(loss.named_parameters()),
                                               epochs=2, steps_per_epoch=len(loader))
        return Trainer(model, loader, None, loss, optimizer, scheduler, Checkpointer(str(folder)), 2,
                       ema=ModelEMA(model, 0.5), print_batch_step=100)

    trainer = trainer_with_loss(tmp_path / "a", 1)
    trainer.fit()
    trained_scale = float(trainer.loss_fn.scale.numpy()[0])
    assert trained_scale != 1.0  # the loss parameter was trained
    prefix = str(tmp_path / "a" / "latest")
    # as PaddleClas: .pdparams holds the EMA model only, .pdema the trained model and the loss's state
    assert "scale" not in paddle.load(prefix + ".pdparams")
    assert float(paddle.load(prefix + ".pdema")["scale"].numpy()[0]) == trained_scale
    fresh = trainer_with_loss(tmp_path / "b", 7)
    fresh.resume(prefix)
    assert float(fresh.loss_fn.scale.numpy()[0]) == trained_scale
    for key, value in params(trainer.model).items():
        np.testing.assert_array_equal(params(fresh.model)[key], value)
        np.testing.assert_array_equal(params(fresh.ema.module)[key], params(trainer.ema.module)[key])
