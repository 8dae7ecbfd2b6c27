"""The pool sample shared by the main job (``mine.pool``) and ``select_unlabeled.py --max-pool``: seeded,
in the pool's order, the main job's draw unchanged; a bad size or seed is a ConfigError naming the argument."""
import logging
import os
import runpy

import numpy as np
import pytest

from ppssld.data.lists.label_list import read_label_list, write_label_list
from ppssld.utils import cli
from ppssld.mining.mine import sample_pool
from ppssld.utils.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, "tools", "select_unlabeled.py")


@pytest.fixture()
def pool_list(tmp_path):
    path = str(tmp_path / "pool.txt")
    write_label_list(path, [(f"images/{i:03d}.png", None) for i in range(50)])
    return path


def test_list_sample_is_seeded_in_pool_order_and_the_main_jobs_draw(tmp_path, pool_list, caplog):
    out = str(tmp_path / "sample.txt")
    with caplog.at_level(logging.INFO, logger="ppssld.mining.mine"):
        pool, root = sample_pool(pool_list, "ROOT", 12, 3, out, size_name="--max-pool", seed_name="--seed")
    assert (pool, root) == (out, "ROOT")
    kept = [r.path for r in read_label_list(out, unlabeled=True)]
    old_draw = sorted(np.random.RandomState(3).permutation(50)[:12].tolist())  # the main job's, before sharing
    assert kept == [f"images/{i:03d}.png" for i in old_draw]
    assert "random sample of 12 of the 50 pool images (--max-pool=12, --seed=3)" in caplog.text
    sample_pool(pool_list, "ROOT", 12, 4, str(tmp_path / "other.txt"))
    assert [r.path for r in read_label_list(str(tmp_path / "other.txt"), unlabeled=True)] != kept
    sample_pool(pool_list, "ROOT", 12, 3, str(tmp_path / "again.txt"))
    assert open(tmp_path / "again.txt").read() == open(out).read()


def test_main_job_mine_pool_draws_through_the_shared_sample(tmp_path, pool_list):
    from ppssld.recipes.ssld import Pipeline

    job = Pipeline({"output_dir": str(tmp_path / "job"), "data": {"seed": 3}})
    path = job._pool_sample(pool_list, 12)  # noqa: SLF001  (the exact call the mine stage makes)
    assert path == str(tmp_path / "job" / "mine" / "pool_sample.txt")
    old_draw = sorted(np.random.RandomState(3).permutation(50)[:12].tolist())
    assert [r.path for r in read_label_list(path, unlabeled=True)] == [f"images/{i:03d}.png" for i in old_draw]
    assert job._pool_sample(pool_list, None) == pool_list  # noqa: SLF001
    with pytest.raises(ConfigError, match="mine.pool must be a whole number"):
        job._pool_sample(pool_list, -5)  # noqa: SLF001


def test_folder_pool_and_no_size(tmp_path, pool_list):
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    for name in ("a.png", "sub/b.jpg", "sub/c.png", "notes.txt"):
        (folder / name).write_bytes(b"")
    out = str(tmp_path / "sample.txt")
    pool, root = sample_pool(str(folder), None, 2, 0, out)
    assert root == str(folder) and pool == out
    kept = [r.path for r in read_label_list(out, unlabeled=True)]
    assert len(kept) == 2 and set(kept) <= {"a.png", "sub/b.jpg", "sub/c.png"}
    assert sample_pool(pool_list, "ROOT", None, 0, str(tmp_path / "none.txt")) == (pool_list, "ROOT")
    assert not os.path.exists(tmp_path / "none.txt")


@pytest.mark.parametrize("size", [0, -3, True, 2.5, "10"])
def test_bad_size_names_the_argument(tmp_path, pool_list, size):
    with pytest.raises(ConfigError, match=r"--max-pool must be a whole number of pool images >= 1"):
        sample_pool(pool_list, "ROOT", size, 0, str(tmp_path / "s.txt"), size_name="--max-pool")


@pytest.mark.parametrize("seed", [-1, 2 ** 32])
def test_bad_seed_names_the_argument(tmp_path, pool_list, seed):
    with pytest.raises(ConfigError, match=r"Global.seed must be a whole number in \[0, 2\*\*32\)"):
        sample_pool(pool_list, "ROOT", 5, seed, str(tmp_path / "s.txt"), seed_name="Global.seed")


def _tool_main(monkeypatch, tmp_path, *extra: str):
    """select_unlabeled's main with the teacher and ``mine`` replaced; returns (main, the calls to mine)."""
    config = tmp_path / "cfg.yaml"
    config.write_text("Global:\n  device: cpu\n  seed: 7\n")
    calls = []
    namespace = runpy.run_path(TOOL, run_name="ppssld_pool_sample_probe")["main"].__globals__  # (not a copy)
    monkeypatch.setitem(namespace, "mine", lambda teacher, config, pool, root, *a, **kw: calls.append((pool, root)))
    monkeypatch.setattr(namespace["teachers"], "teacher_from_config", lambda config: "teacher")
    monkeypatch.setattr("sys.argv", [TOOL, "-c", str(config), "--eval-list", "val.txt", "--k", "5",
                                     "--out", str(tmp_path / "out"), *extra])
    return namespace["main"], calls


def test_tool_mines_the_sample_seeded_by_global_seed(monkeypatch, tmp_path, pool_list):
    main, calls = _tool_main(monkeypatch, tmp_path, "--pool", pool_list, "--image-root", str(tmp_path), "--max-pool",
                             "9")  # a real folder: a missing --image-root is refused first
    main()
    sample = str(tmp_path / "out" / "pool_sample.txt")
    assert calls == [(sample, str(tmp_path))]
    expected = sorted(np.random.RandomState(7).permutation(50)[:9].tolist())
    assert [r.path for r in read_label_list(sample, unlabeled=True)] == [f"images/{i:03d}.png" for i in expected]


def test_tool_bad_max_pool_is_one_error_line_and_status_2(monkeypatch, tmp_path, pool_list, capsys):
    main, calls = _tool_main(monkeypatch, tmp_path, "--pool", pool_list, "--image-root", str(tmp_path), "--max-pool",
                             "0")
    with pytest.raises(SystemExit) as exit_info:
        cli.run(main)
    assert exit_info.value.code == 2 and calls == []
    assert capsys.readouterr().err.splitlines()[-1] == ("error: --max-pool must be a whole number of pool images "
                                                        ">= 1 (leave it out to score the whole pool), got 0")
