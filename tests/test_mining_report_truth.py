"""Mining report with known (hidden) labels: the teacher's accuracy on the mined images, per class, named."""
import pytest

from ppssld.mining.report import name_classes, plot_mined_accuracy, teacher_accuracy


def test_teacher_accuracy_per_mined_class():
    acc = teacher_accuracy([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], 4, ["a", "b", "c", "d"])
    assert (acc["images"], acc["correct"], acc["accuracy"]) == (6, 4, 0.6667)
    assert [(r["name"], r["mined"], r["correct"], r["accuracy"]) for r in acc["per_class"]] == [
        ("a", 2, 1, 0.5), ("b", 1, 1, 1.0), ("c", 3, 2, 0.6667), ("d", 0, 0, None)]
    assert teacher_accuracy([], [], 2)["accuracy"] is None
    with pytest.raises(ValueError, match="2 predictions for 1 true labels"):
        teacher_accuracy([0, 1], [0], 2)


def test_names_and_picture(tmp_path):
    named = name_classes({"per_class": [3, 1], "short_classes": [{"class": 1, "selected": 1, "missing": 2}]},
                         ["cat", "dog"])
    assert named["per_class_named"] == {"cat": 3, "dog": 1} and named["short_classes"][0]["name"] == "dog"
    plot_mined_accuracy(teacher_accuracy([0, 0, 1], [0, 1, 1], 2, ["cat", "dog"]), str(tmp_path / "p.png"), k=3)
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
