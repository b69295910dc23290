"""Silence what TensorFlow and the runtimes print (C++ logs, converter dumps, warnings).

Their output goes to the process's file descriptors 1 and 2 as well as to sys.stdout, so both
levels are redirected. With EDGEPACK_DEBUG=1 nothing is hidden.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import warnings

from edgepack.errors import debug_enabled

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@contextlib.contextmanager
def quiet():
    """Run the body with stdout/stderr (Python and native) and warnings discarded."""
    if debug_enabled():
        yield
        return
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                warnings.simplefilter("ignore")
                yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
