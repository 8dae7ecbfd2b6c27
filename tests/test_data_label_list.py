"""Label-list reading and writing: unlabeled rows, spaces in paths, errors with file:line."""
import os

import pytest

from ppssld.data.lists.label_list import (UNLABELED, Record, check_records, count_repeats, parse_line, read_label_list,
                                    read_label_list_with_problems, write_label_list)
from ppssld.utils.errors import DataError


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("line, unlabeled, expected", [
    ("a/b.jpg 3", False, ("a/b.jpg", 3)),
    ("a/b.jpg", False, ("a/b.jpg", UNLABELED)),
    ("a/b.jpg -1", False, ("a/b.jpg", UNLABELED)),
    ("my dir/my image.jpg 7", False, ("my dir/my image.jpg", 7)),
    ("my dir/my image.jpg", False, ("my dir/my image.jpg", UNLABELED)),
    ("  a.png\t2  ", False, ("a.png", 2)),
    ("x y z", True, ("x y z", UNLABELED)),
    ("a.jpg -1", True, ("a.jpg", UNLABELED)),
])
def test_parse_line_rules(line, unlabeled, expected):
    path, label, problem = parse_line(line, unlabeled=unlabeled)
    assert problem is None
    assert (path, label) == expected


def test_parse_line_delimiter():
    assert parse_line("a b.jpg\t4", delimiter="\t")[:2] == ("a b.jpg", 4)


def test_read_list_reports_every_problem_with_line_numbers(tmp_path):
    path = _write(tmp_path, "train.txt", "ok.jpg 1\nbad.jpg cat\n\nneg.jpg -2\nfloat.jpg 1.5\n")
    records, problems = read_label_list_with_problems(path)
    assert [r.path for r in records] == ["ok.jpg"]
    assert [(p.line, p.source) for p in problems] == [(2, path), (4, path), (5, path)]
    assert "'cat' is not an integer" in problems[0].message
    assert "negative" in problems[1].message
    with pytest.raises(DataError) as err:
        read_label_list(path)
    text = str(err.value)
    assert f"{path}:2:" in text and f"{path}:5:" in text and "3 problem(s)" in text


def test_empty_and_missing_lists(tmp_path):
    empty = _write(tmp_path, "empty.txt", "\n  \n")
    with pytest.raises(DataError, match=r"empty\.txt: label list is empty"):
        read_label_list(empty)
    with pytest.raises(DataError, match="does not exist"):
        read_label_list(str(tmp_path / "nope.txt"))


def test_unlabeled_list_refuses_labels_unless_asked(tmp_path):
    path = _write(tmp_path, "unl.txt", "u1.jpg 0\nu2.jpg\nu3.jpg -1\n")
    with pytest.raises(DataError) as err:
        read_label_list(path, unlabeled=True)
    assert f"{path}:1:" in str(err.value) and "unlabeled_ignore_labels" in str(err.value)
    records = read_label_list(path, unlabeled=True, ignore_labels=True)
    assert [(r.path, r.label, r.line) for r in records] == [("u1.jpg", -1, 1), ("u2.jpg", -1, 2), ("u3.jpg", -1, 3)]


def test_utf8_bom_and_bad_encoding(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes("\ufeffé.jpg 1\n".encode("utf-8") + b"\xff\xfe.jpg 2\n")
    records, problems = read_label_list_with_problems(str(path))
    assert records[0].path == "é.jpg"
    assert problems[0].line == 2 and "UTF-8" in problems[0].message


def test_check_records_paths_and_labels(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.jpg").write_bytes(b"x")
    (root / "sub").mkdir()
    recs = [Record("a.jpg", 0, "l.txt", 1), Record("./a.jpg", 1, "l.txt", 2), Record("../out.jpg", 0, "l.txt", 3),
            Record("/etc/passwd", 0, "l.txt", 4), Record("b.jpg", 5, "l.txt", 5), Record("sub", 0, "l.txt", 6)]
    problems = check_records(recs, str(root), class_num=3)
    by_line = {p.line: p.message for p in problems}
    assert "has label 1 here but label 0 at l.txt:1" in by_line[2]
    assert "escapes image_root" in by_line[3] and "escapes image_root" in by_line[4]
    assert "outside [0, 3)" in [p.message for p in problems if p.line == 5][0]
    assert "does not exist" in [p.message for p in problems if p.line == 5][1]
    assert "is a folder" in by_line[6]


def test_repeated_lines_are_samples_not_problems(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.jpg").write_bytes(b"x")
    (root / "b.jpg").write_bytes(b"x")
    recs = [Record("a.jpg", 0, "l.txt", 1), Record("./a.jpg", 0, "l.txt", 2), Record("b.jpg", 1, "l.txt", 3),
            Record("a.jpg", 0, "l.txt", 4), Record("b.jpg", -1, "u.txt", 1)]
    assert check_records(recs, str(root), class_num=2) == []
    assert count_repeats(recs, str(root)) == 3
    conflict = [Record("a.jpg", -1, "u.txt", 1), Record("a.jpg", 0, "l.txt", 1), Record("a.jpg", 1, "l.txt", 2)]
    problems = check_records(conflict, str(root), class_num=2)
    assert [p.line for p in problems] == [2]
    assert problems[0].message.startswith("path 'a.jpg' has label 1 here but label 0 at l.txt:1")


def test_writer_round_trip(tmp_path):
    rows = [("a.jpg", 1), ("with space.png", 2), ("u.jpg", None), ("un labeled.png", -1), ("noext name", None)]
    out = str(tmp_path / "out" / "list.txt")
    assert write_label_list(out, rows) == 5
    assert open(out, encoding="utf-8").read() == ("a.jpg 1\nwith space.png 2\nu.jpg\nun labeled.png\n"
                                                  "noext name -1\n")
    back = [(r.path, r.label) for r in read_label_list(out)]
    assert back == [("a.jpg", 1), ("with space.png", 2), ("u.jpg", -1), ("un labeled.png", -1), ("noext name", -1)]
    assert not [f for f in os.listdir(tmp_path / "out") if f.endswith(".tmp")]
    with pytest.raises(DataError):
        write_label_list(out, [("bad\nname.jpg", 1)])
