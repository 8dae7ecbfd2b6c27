"""Progress on a terminal is a tqdm bar; anywhere else (log files, pipes) it is log lines without carriage returns."""
import io
import logging

from tqdm import tqdm

from ppssld.utils.progress import LogProgress, progress


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_not_a_terminal_gives_log_lines(caplog):
    with caplog.at_level(logging.INFO, logger="ppssld.utils.progress"):
        bar = progress(range(5), desc="scoring", unit="img", file=io.StringIO(), log_interval=0.0)
        assert isinstance(bar, LogProgress)
        assert list(bar) == [0, 1, 2, 3, 4]
        with progress(total=10, desc="de-duplicating", unit="img", file=io.StringIO()) as manual:
            manual.update(4)
            manual.update(10 - manual.n)  # the mining code's pattern: update to an absolute count
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("scoring: 1/5 img (20%), ") and "img/s, eta" in lines[0]
    assert lines[4].startswith("scoring: 5/5 img (100%)") and len([ln for ln in lines if "scoring" in ln]) == 5
    assert [ln for ln in lines if "de-duplicating" in ln][-1].startswith("de-duplicating: 10/10 img (100%)")
    assert not any("\r" in ln for ln in lines)


def test_terminal_gets_the_tqdm_bar():
    bar = progress(range(3), desc="x", file=_Tty())
    assert isinstance(bar, tqdm) and list(bar) == [0, 1, 2]


def test_disabled_log_progress_is_silent(caplog):
    with caplog.at_level(logging.INFO, logger="ppssld.utils.progress"):
        assert list(progress(range(3), disable=True, file=io.StringIO(), log_interval=0.0)) == [0, 1, 2]
    assert not caplog.records
