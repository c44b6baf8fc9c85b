"""Keeping third-party native chatter (TensorFlow/absl start-up lines, LiteRT's XNNPACK note) off the
terminal: it is written by C++ straight to file descriptor 2, below Python's logging and warnings."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

VERBOSE_ENV = "FETALBIO_VERBOSE"  # set by `fetalbio --verbose`: then nothing is silenced


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Send fd 2 to /dev/null inside the block (unless verbose); Python exceptions still propagate."""
    if os.environ.get(VERBOSE_ENV):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (an embedding host): nothing to silence
        yield
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)
