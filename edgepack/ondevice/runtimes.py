"""Runtime imports the agent and the loader share, and the quiet load: no runtime chatter on an app's stderr."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import threading

# Lines a runtime's C++ code writes to stderr on every load, which an app did not ask for.
CHATTER = re.compile(rb"^INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.\s*$")
QUIET_LOCK = threading.Lock()  # file descriptor 2 is the process's: one quiet load at a time


def import_tflite():
    """Return (runtime name, version, Interpreter, load_delegate) of the first TFLite runtime that imports.

    Tried in order: ai_edge_litert, tflite_runtime, tensorflow.lite.

    Raises:
        ImportError: none imports; the message gives each one's reason.
    """
    reasons = []
    try:
        import ai_edge_litert
        from ai_edge_litert.interpreter import Interpreter, load_delegate

        return "ai_edge_litert", getattr(ai_edge_litert, "__version__", None), Interpreter, load_delegate
    except Exception as exc:
        reasons.append("ai_edge_litert: %s" % exc)
    try:
        import tflite_runtime
        from tflite_runtime.interpreter import Interpreter, load_delegate

        return "tflite_runtime", getattr(tflite_runtime, "__version__", None), Interpreter, load_delegate
    except Exception as exc:
        reasons.append("tflite_runtime: %s" % exc)
    try:
        import tensorflow as tf

        return "tensorflow.lite", tf.__version__, tf.lite.Interpreter, tf.lite.experimental.load_delegate
    except Exception as exc:
        reasons.append("tensorflow: %s" % exc)
    raise ImportError("no TFLite runtime importable (" + "; ".join(reasons) + ")")


@contextlib.contextmanager
def quiet_stderr():
    """Hold what is written to file descriptor 2 meanwhile and write it back without the runtime's load chatter.

    Everything else (an app's own messages, a runtime's warnings and errors) still reaches stderr,
    only later: once the block ends.
    """
    with QUIET_LOCK:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, AttributeError, ValueError):
            yield
            return
        held = tempfile.TemporaryFile()
        try:
            os.dup2(held.fileno(), 2)
            try:
                yield
            finally:
                try:
                    sys.stderr.flush()
                except (OSError, ValueError):
                    pass
                os.dup2(saved, 2)
                held.seek(0)
                kept = [line for line in held.read().splitlines(True) if not CHATTER.match(line)]
                data = b"".join(kept)
                while data:
                    data = data[os.write(2, data):]
        finally:
            os.close(saved)
            held.close()
