"""The one sharded, resumable teacher pass (``ppssld.teacher.shards``, ``ppssld.teacher.chunk_pass``) that
mining's pool scoring and the soft-label cache both run on, and the one stable top-k (``ppssld.utils.topk``)."""
import json
import os
import threading

import numpy as np
import pytest

from ppssld.teacher.chunk_pass import fixed_batches, run_chunks
from ppssld.teacher.shards import changed_keys, claim_folder, share, wait_until
from ppssld.utils.errors import ConfigError, DataError
from ppssld.utils.topk import top_k


@pytest.mark.parametrize("world", [1, 2, 3, 5])
def test_share_gives_every_task_to_exactly_one_rank_in_order(world):
    tasks = [(v, c) for v in range(3) for c in range(7)]
    shares = [share(tasks, r, world) for r in range(world)]
    assert sorted(t for s in shares for t in s) == sorted(tasks)
    for r, mine in enumerate(shares):  # rank r: positions r, r + world, ... in the task order
        assert [tasks.index(t) for t in mine] == list(range(r, len(tasks), world))
    assert share(range(10), 1, 3) == [1, 4, 7]  # the rule mining used: c % world == rank


def test_wait_until_returns_when_ready_and_names_what_it_waited_for():
    flag = []
    threading.Timer(0.05, lambda: flag.append(1)).start()
    wait_until(lambda: bool(flag), 5, "the flag", interval=0.01)
    with pytest.raises(DataError, match=r"^timed out after 0s waiting for 3 things; re-run$"):
        wait_until(lambda: False, 0.0, lambda: "3 things", interval=0.01, hint="re-run")


def test_top_k_is_descending_and_ties_keep_the_lower_class_first():
    probs = np.array([[0.1, 0.4, 0.4, 0.1], [0.25, 0.25, 0.25, 0.25]], np.float32)
    values, classes = top_k(probs, 3)
    assert classes.tolist() == [[1, 2, 0], [0, 1, 2]]
    np.testing.assert_array_equal(values, np.array([[0.4, 0.4, 0.1], [0.25, 0.25, 0.25]], np.float32))
    values, classes = top_k(probs, 2, np.uint8, "float16")
    assert values.dtype == np.float16 and classes.dtype == np.uint8


def test_fixed_batches_cut_at_the_same_boundaries_from_a_lazy_stream():
    images = (np.full((2,), i) for i in range(7))
    sizes = [b.shape[0] for b in fixed_batches(images, 3)]
    assert sizes == [3, 3, 1]
    assert list(fixed_batches(iter([]), 3)) == []


def test_claim_folder_writes_waits_refuses_and_takes_over(tmp_path):
    plan = {"a": 1, "b": [1, 2]}
    claim_folder(str(tmp_path), "plan.json", plan, 0, on_change=pytest.fail)
    assert json.loads((tmp_path / "plan.json").read_text()) == plan
    claim_folder(str(tmp_path), "plan.json", dict(plan), 1, on_change=pytest.fail)  # same plan: nothing to judge

    def refuse(old, changed):
        raise ConfigError(f"differs in {changed}")

    with pytest.raises(ConfigError, match=r"differs in \['b', 'c'\]"):
        claim_folder(str(tmp_path), "plan.json", {"a": 1, "b": [2], "c": 0}, 1, on_change=refuse)
    claim_folder(str(tmp_path), "plan.json", {"a": 2}, 1, on_change=refuse, peers_check=False)  # rank 0 judges
    seen = []
    claim_folder(str(tmp_path), "plan.json", {"a": 2}, 0, on_change=lambda old, changed: seen.append((old, changed)))
    assert seen == [(plan, ["a", "b"])]
    assert json.loads((tmp_path / "plan.json").read_text()) == {"a": 2}  # rank 0 took the folder over
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=rf"timed out after 0s waiting for rank 0 to write {empty}/plan.json"):
        claim_folder(str(empty), "plan.json", plan, 1, on_change=pytest.fail, timeout=0.0)
    assert not os.path.exists(empty / "plan.json")  # only rank 0 writes


def test_changed_keys_compares_json_values():
    assert changed_keys({"a": 1, "b": {"x": 1}}, {"b": {"x": 1}, "a": 1}) == []
    assert changed_keys({"a": 1}, {"a": 1, "c": None}) == ["c"]  # a key one side lacks
    assert changed_keys({"a": 1, "b": (1, 2)}, {"a": 2, "b": [1, 2]}) == ["a"]


@pytest.mark.parametrize("prefetch", [True, False])
def test_run_chunks_skips_finished_chunks_limits_and_counts(prefetch):
    done_before = {2}
    loaded, processed = [], []

    def load(c):
        loaded.append(c)
        return [c] * (c + 1)

    def process(c, images):
        processed.append((c, images))
        return len(images)

    stats = run_chunks(share(range(6), 0, 2), lambda c: c in done_before, load, process, prefetch, limit=1)
    assert processed == [(0, [0])]
    assert (stats.mine, stats.done_before, stats.done_now, stats.images_now) == (3, 1, 1, 1)
    stats = run_chunks(share(range(6), 0, 2), lambda c: c in done_before, load, process, prefetch)
    assert [c for c, _ in processed[1:]] == [0, 4] and stats.images_now == 1 + 5
    assert loaded.count(4) == 1  # each chunk read once, whether read ahead or not


def test_run_chunks_reads_the_next_chunk_while_the_current_one_is_processed():
    started = threading.Event()

    def load(c):
        if c == 1:
            started.set()
        return c

    def process(c, _images):
        if c == 0:  # chunk 1 is read in the background while chunk 0 is processed
            assert started.wait(5)
        return 1

    assert run_chunks([0, 1], lambda c: False, load, process, prefetch=True).done_now == 2
