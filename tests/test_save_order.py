"""Order of saving: ``latest`` is written before evaluation, so a failing evaluation loses no training."""
import numpy as np
import pytest

from ppssld.engine.builder import build_trainer
from ppssld.engine.checkpoint import Checkpointer
from tests.conftest import distill_config, save_random_backbone


def _student(trainer):
    return {k: v.numpy().copy() for k, v in trainer.model.state_dict().items() if k.startswith("Student.")}


def test_evaluation_error_keeps_the_epoch_and_resume_evaluates_it_then_trains_on(tiny_data, tmp_path):
    root, paths = tiny_data
    teacher = save_random_backbone(str(tmp_path / "t.pdparams"), class_num=4)
    straight = build_trainer(distill_config(root, paths, teacher, str(tmp_path / "a"), epochs=2))
    straight.fit()

    broken = build_trainer(distill_config(root, paths, teacher, str(tmp_path / "b"), epochs=2))

    def failing_eval(epoch):
        raise OSError(f"eval disk vanished at epoch {epoch}")

    broken._evaluate = failing_eval
    with pytest.raises(OSError, match="epoch 1"):
        broken.fit()
    latest = str(tmp_path / "b" / "DistillationModel" / "latest")
    model = build_trainer(distill_config(root, paths, teacher, str(tmp_path / "c"), epochs=2)).model
    states = Checkpointer.load(latest, model, restore_rng=False)
    assert states["epoch"] == 1 and states["eval_pending"] is True
    assert not (tmp_path / "b" / "DistillationModel" / "best_model.pdparams").exists()

    cfg = distill_config(root, paths, teacher, str(tmp_path / "b"), epochs=2)
    cfg["Global"]["checkpoints"] = latest
    resumed = build_trainer(cfg)
    assert resumed.start_epoch == 2 and resumed.pending_eval_epoch == 1
    result = resumed.fit()
    # the missing evaluation ran first (best_model exists for epoch 1 or 2) and training went on identically
    assert (tmp_path / "b" / "DistillationModel" / "best_model.pdparams").is_file()
    assert result["best_epoch"] in (1, 2) and result["best_metric"] == pytest.approx(straight.best_metric, abs=1e-9)
    a, b = _student(straight), _student(resumed)
    worst = max(float(np.abs(a[k] - b[k]).max()) for k in a)
    assert worst <= 1e-6, worst
    states = Checkpointer.load(latest, model, restore_rng=False)
    assert states["epoch"] == 2 and states["eval_pending"] is False


def test_inf_loss_stops_naming_epoch_and_step(tiny_data, tmp_path):
    from ppssld.engine.trainer import TrainingDivergedError

    root, paths = tiny_data
    teacher = save_random_backbone(str(tmp_path / "t.pdparams"), class_num=4)
    cfg = distill_config(root, paths, teacher, str(tmp_path / "i"), epochs=1)
    cfg["Loss"]["Train"][0]["JSDivLoss"]["weight"] = float("inf")
    with pytest.raises(TrainingDivergedError, match=r"loss became inf at epoch 1, step 1/4"):
        build_trainer(cfg).fit()
