"""Silence the log noise ppssld itself causes and knows to be harmless; nothing else.

Each rule names the exact text it drops and why it is harmless:

* Paddle's ``OMP_NUM_THREADS`` lecture (``WARNING: OMP_NUM_THREADS set to N, not 1 ...`` and
  ``PLEASE USE OMP_NUM_THREADS WISELY.``), printed when Paddle is imported with more than one
  thread. ppssld sets the count on purpose (:mod:`ppssld.utils.threads`); the lecture is only
  dropped then. A thread count the user set keeps it.
* PaddleClas's ``"init_res" will be deprecated`` warning: its own backbones call the old
  function on every build; nothing a user can change.
* Paddle's C++ line ``Paddle static graph(PIR) not support input out tensor for now!!!!!``, logged
  while ``paddle.jit.save`` traces the zoo backbones ppssld exports (an op of theirs passes an
  output tensor; the exported model is checked against the dygraph model by the export tests).
* Paddle's ``UserWarning: No ccache found`` at import: it concerns compiling C++ extensions, which
  ppssld never does.
* faiss's ``Loading faiss with AVX... support`` / ``Successfully loaded ...`` INFO lines (its
  ``faiss.loader`` logger, shown wherever a library configured the root logger): a failure to load
  is still logged as a warning.
"""
import contextlib
import io
import logging
import os
import sys
import tempfile
from typing import Iterator, Sequence

OMP_LECTURE = ("WARNING: OMP_NUM_THREADS set to ", "PLEASE USE OMP_NUM_THREADS WISELY.")
PPCLS_DEPRECATIONS = ('"init_res" will be deprecated',)
PIR_OUT_TENSOR = ("Paddle static graph(PIR) not support input out tensor",)
NO_CCACHE = "No ccache found"


FAISS_LOADER = "faiss.loader"


def quiet_import_noise() -> None:
    """Drop Paddle's import-time ``No ccache found`` warning (:data:`NO_CCACHE`) and faiss's loader INFO lines
    (call before ``import paddle`` / ``import faiss``)."""
    import warnings

    warnings.filterwarnings("ignore", message=NO_CCACHE, category=UserWarning)
    logging.getLogger(FAISS_LOADER).setLevel(logging.WARNING)


class _LineFilter(io.TextIOBase):
    """A text stream that forwards whole lines to ``target`` except those starting with ``prefixes``."""

    def __init__(self, target: io.TextIOBase, prefixes: Sequence[str]) -> None:
        super().__init__()
        self.target, self.prefixes, self.pending = target, tuple(prefixes), ""
        self.dropped = 0

    def write(self, text: str) -> int:
        self.pending += text
        while "\n" in self.pending:
            line, self.pending = self.pending.split("\n", 1)
            if line.startswith(self.prefixes):
                self.dropped += 1
            else:
                self.target.write(line + "\n")
        return len(text)

    def finish(self) -> None:
        if self.pending and not self.pending.startswith(self.prefixes):
            self.target.write(self.pending)
        self.pending = ""


@contextlib.contextmanager
def drop_stderr_lines(prefixes: Sequence[str]) -> Iterator[_LineFilter]:
    """Within the block, lines written to ``sys.stderr`` that start with one of ``prefixes`` are dropped."""
    original = sys.stderr
    stream = _LineFilter(original, prefixes)
    sys.stderr = stream
    try:
        yield stream
    finally:
        sys.stderr = original
        stream.finish()


def import_paddle_without_thread_lecture() -> None:
    """Import Paddle with its ``OMP_NUM_THREADS`` lecture dropped (call only when ppssld chose the count)."""
    if "paddle" in sys.modules:
        return
    with drop_stderr_lines(OMP_LECTURE):
        import paddle  # noqa: F401


class _DropMessages(logging.Filter):
    def __init__(self, fragments: Sequence[str]) -> None:
        super().__init__()
        self.fragments = tuple(fragments)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(fragment in message for fragment in self.fragments)


def quiet_ppcls_deprecations() -> None:
    """Drop PaddleClas's known deprecation messages (:data:`PPCLS_DEPRECATIONS`) from its ``ppcls`` logger."""
    target = logging.getLogger("ppcls")
    if not any(isinstance(f, _DropMessages) for f in target.filters):
        target.addFilter(_DropMessages(PPCLS_DEPRECATIONS))


@contextlib.contextmanager
def drop_native_stderr_lines(fragments: Sequence[str]) -> Iterator[None]:
    """Within the block, lines that native code writes to file descriptor 2 and that contain one of
    ``fragments`` are dropped; every other line is written to stderr when the block ends."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            for line in capture.read().decode("utf-8", "replace").splitlines(keepends=True):
                if not any(fragment in line for fragment in fragments):
                    sys.stderr.write(line)
            sys.stderr.flush()
