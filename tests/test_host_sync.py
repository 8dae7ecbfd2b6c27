"""No host read inside a training step: loss parts, metrics and the non-finite flag are read only at the
print step (``Global.print_batch_step``) and at the end of the epoch (issue 15, point 5)."""
import copy
import functools
from typing import Dict, List

import numpy as np
import paddle
import pytest

from ppssld.engine.builder import build_trainer
from ppssld.engine.evaluator import evaluate
from ppssld.engine.trainer import TrainingDivergedError
from tests.conftest import distill_config, save_random_backbone

# every Python-level way a paddle Tensor's values reach the host (a device sync on a GPU)
READ_PATHS = ("numpy", "item", "tolist", "__float__", "__int__", "__bool__", "__index__", "__array__",
              "__format__", "__repr__", "__str__", "__complex__", "cpu")


class HostReads:
    """Counts top-level host reads of tensors, attributed to the current step (set by :class:`MarkingLoader`)."""

    def __init__(self) -> None:
        self.step = 0
        self.by_step: Dict[int, List[str]] = {}
        self._depth = 0

    def wrap(self, name: str, original):
        @functools.wraps(original)
        def counted(tensor, *args, **kwargs):
            if self._depth == 0:  # float() calls numpy() inside: one read, not two
                self.by_step.setdefault(self.step, []).append(name)
            self._depth += 1
            try:
                return original(tensor, *args, **kwargs)
            finally:
                self._depth -= 1
        return counted


class MarkingLoader:
    """A loader that tells :class:`HostReads` which step the reads after each batch belong to."""

    def __init__(self, loader, reads: HostReads) -> None:
        self.loader, self.reads = loader, reads

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for step, batch in enumerate(self.loader, start=1):
            self.reads.step = step
            yield batch
        self.reads.step = -1  # after the loop: the epoch's end


@pytest.fixture
def count_reads(monkeypatch):
    reads = HostReads()
    for name in READ_PATHS:
        monkeypatch.setattr(paddle.Tensor, name, reads.wrap(name, getattr(paddle.Tensor, name)))
    for module in (paddle.device, paddle.device.cuda):
        monkeypatch.setattr(module, "synchronize", reads.wrap("synchronize", module.synchronize))
    return reads


def _student_config(cfg: dict) -> dict:
    cfg = copy.deepcopy(cfg)
    cfg["Arch"] = {"name": "MobileNetV3_small_x0_35", "class_num": 4}
    cfg["Loss"] = {"Train": [{"CELoss": {"weight": 1.0}}], "Eval": [{"CELoss": {"weight": 1.0}}]}
    cfg["Metric"] = {"Train": [{"TopkAcc": {"topk": [1, 2]}}], "Eval": [{"TopkAcc": {"topk": [1, 2]}}]}
    cfg["DataLoader"]["Train"]["dataset"].pop("unlabeled_label_path")
    return cfg


@pytest.fixture
def configs(tiny_data, tmp_path):
    root, paths = tiny_data
    teacher = save_random_backbone(str(tmp_path / "teacher.pdparams"), class_num=4)
    distill = distill_config(root, paths, teacher, str(tmp_path / "out"), epochs=1)
    distill["Loss"]["Train"].append({"DistillationDKDLoss": {"weight": 0.5, "model_name_pairs": [["Student",
                                                                                                   "Teacher"]]}})
    distill["Metric"]["Train"] = [{"DistillationTopkAcc": {"model_key": "Student", "topk": [1, 2]}}]
    # the rule is about a GPU's queue: the CPU teacher engine hands each batch to Paddle Inference through host
    # memory by design (there is no device queue to stall), and on a GPU auto keeps the dygraph teacher
    distill["Arch"]["teacher_engine"] = "dygraph"
    return {"distillation": distill, "student_ce": _student_config(distill)}


@pytest.mark.parametrize("arm", ["distillation", "student_ce"])
def test_no_host_read_inside_training_steps(configs, count_reads, arm):
    cfg = copy.deepcopy(configs[arm])
    cfg["Global"]["print_batch_step"] = 100  # more than the epoch's steps: only the last step reads
    trainer = build_trainer(cfg)
    trainer.train_loader = MarkingLoader(trainer.train_loader, count_reads)
    steps = trainer._steps_per_epoch()
    assert steps == {"distillation": 4, "student_ce": 3}[arm]  # 32 images (24 labeled + 8 unlabeled) / 8
    averages = trainer.train_one_epoch(1)
    inside = {s: names for s, names in count_reads.by_step.items() if 1 <= s < steps}
    assert inside == {}, inside
    # the last step's print read (one transfer) and the epoch end's metric summary (one per metric)
    assert count_reads.by_step.get(steps, []) == ["numpy"], count_reads.by_step
    assert count_reads.by_step.get(-1, []) == ["numpy"], count_reads.by_step
    assert np.isfinite(averages["loss"]) and 0.0 <= averages["top1"] <= averages["top2"] <= 1.0


def test_print_steps_read_once_each(configs, count_reads):
    cfg = copy.deepcopy(configs["student_ce"])
    cfg["Global"]["print_batch_step"] = 2
    trainer = build_trainer(cfg)
    trainer.train_loader = MarkingLoader(trainer.train_loader, count_reads)
    trainer.train_one_epoch(1)
    assert {s: len(v) for s, v in count_reads.by_step.items() if s > 0} == {2: 1, 3: 1}, count_reads.by_step


def test_device_meters_equal_per_step_host_averages(configs):
    """The averages read at the print step equal the per-step float() averages the loop used to compute."""
    cfg = copy.deepcopy(configs["distillation"])
    cfg["Global"]["print_batch_step"] = 100
    trainer = build_trainer(cfg)
    seen: Dict[str, List[float]] = {}
    sizes: List[int] = []
    loss_fn = trainer.loss_net

    def recording(outputs, labels):
        parts = loss_fn(outputs, labels)
        for key, value in parts.items():
            seen.setdefault(key, []).append(float(value))
        sizes.append(int(labels.shape[0]))
        return parts

    trainer.loss_net = recording
    averages = trainer.train_one_epoch(1)
    weights = np.asarray(sizes, dtype=np.float64)
    for key, values in seen.items():
        expected = float(np.dot(values, weights) / weights.sum())
        assert averages[key] == pytest.approx(expected, rel=1e-12, abs=1e-15), key


def test_eval_reads_once_at_the_end(configs, count_reads):
    cfg = copy.deepcopy(configs["student_ce"])
    trainer = build_trainer(cfg)
    count_reads.step = 0
    results = evaluate(trainer.model, trainer.eval_loader, trainer.eval_metrics, trainer.eval_loss, epoch=1)
    # one stacked read of the loss sums, then one per metric's counts
    assert count_reads.by_step == {0: ["numpy", "numpy"]}, count_reads.by_step
    assert results["samples"] == 24 and 0.0 <= results["top1"] <= 1.0


def test_nan_found_at_the_print_step_names_the_step_it_happened(configs, monkeypatch):
    cfg = copy.deepcopy(configs["distillation"])
    cfg["Global"]["print_batch_step"] = 3
    trainer = build_trainer(cfg)
    loss_fn, calls = trainer.loss_net, []

    def poisoned(outputs, labels):
        parts = loss_fn(outputs, labels)
        calls.append(1)
        if len(calls) == 2:  # step 2 of 4 goes NaN; the next read is at step 3
            parts = dict(parts, loss=parts["loss"] * float("nan"))
        return parts

    trainer.loss_net = poisoned
    with pytest.raises(TrainingDivergedError, match=r"loss became nan at epoch 1, step 2/4 \(global step 2\); "
                                                     r"detected at step 3/4.*steps 2-3 ran on non-finite"):
        trainer.train_one_epoch(1)
    assert len(calls) == 3  # stopped at the read, step 4 never ran


def test_out_of_range_label_in_training_is_raised_at_the_read(configs):
    from ppssld.loss.functional import hard_label_ce

    cfg = copy.deepcopy(configs["student_ce"])
    cfg["Global"]["print_batch_step"] = 2
    trainer = build_trainer(cfg)
    original = trainer.loss_net

    def bad_labels(outputs, labels):
        parts = original(outputs, labels)
        extra = hard_label_ce(outputs, paddle.full_like(labels, 9))  # label 9 of 4 classes
        return dict(parts, loss=parts["loss"] + 0.0 * extra)

    trainer.loss_net = bad_labels
    with pytest.raises(ValueError, match=r"labels must lie in \[-1, 4\).*epoch 1, steps 1-2/3"):
        trainer.train_one_epoch(1)
