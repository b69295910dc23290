"""TFLite Micro's own interpreter on the host, from the `tflite-micro` package where installed.

It runs the same kernels (the portable reference ones) and the same allocator as the firmware,
so its recording allocator gives the arena the model really takes, and its outputs are a real
check of the int8 model. Its interpreter reports through C `stderr`, which is read back here.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from importlib import metadata

import numpy as np

from edgepack.model.tflite_runner import TfliteRunner
from edgepack.errors import BuildError
from edgepack.micro.arena import ArenaFigure, align
from edgepack.micro.graph import Graph, read_graph

def tflm_version() -> str | None:
    """Return the installed tflite-micro version, or None when it is not installed."""
    try:
        import tflite_micro  # noqa: F401  (installed but broken counts as absent)
    except Exception:
        return None
    try:
        return metadata.version("tflite-micro")
    except metadata.PackageNotFoundError:
        return "unknown"


@contextlib.contextmanager
def _native_stderr():
    """Collect what native code writes to file descriptor 2 in the body; yields a reader."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        text: list[str] = []
        try:
            yield text
        finally:
            _flush_c_stdio()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text.append(sink.read().decode("utf-8", "replace"))


def _flush_c_stdio() -> None:
    try:
        import ctypes

        ctypes.CDLL(None).fflush(None)
    except Exception:  # not on this libc: stderr is unbuffered in C anyway
        pass


class TflmRunner(TfliteRunner):
    """Run a .tflite model in TFLite Micro's host interpreter, float in and out.

    The specs and the (de)quantization come from the TFLite interpreter (`TfliteRunner`);
    only the invocation goes to TFLite Micro.
    """

    def __init__(self, content: bytes, arena_size: int, graph: Graph | None = None):
        super().__init__(content)
        from tflite_micro import runtime

        self.graph = graph or read_graph(content)
        errors: list[str] = []
        try:
            with _native_stderr() as errors:
                self.micro = runtime.Interpreter.from_bytes(content, arena_size=int(arena_size))
        except Exception as exc:
            said = next((line for line in "".join(errors).splitlines() if line.strip()), str(exc))
            raise BuildError(
                f"TFLite Micro's interpreter cannot load the model: {said[:300]}",
                hint="the model uses something this TFLite Micro does not run; see the message above",
            ) from None
        # TFLite Micro addresses inputs and outputs by position in the subgraph, TFLite by name.
        self.positions_in = {n: self.graph.inputs.index(d["index"]) for n, d in self.input_details.items()}
        self.positions_out = {n: self.graph.outputs.index(d["index"]) for n, d in self.output_details.items()}
        self.runner = self._invoke
        self.invoked = False

    def _invoke(self, **feed: np.ndarray) -> dict[str, np.ndarray]:
        for name, x in feed.items():
            self.micro.set_input(x, self.positions_in[name])
        self.micro.invoke()
        self.invoked = True
        return {name: self.micro.get_output(pos) for name, pos in self.positions_out.items()}

    def arena(self) -> ArenaFigure:
        """Return the arena TFLite Micro's recording allocator saw, after one invocation."""
        if not self.invoked:
            self._invoke(**{n: np.zeros(d["shape"], d["dtype"]) for n, d in self.input_details.items()})
        with _native_stderr() as printed:
            self.micro.print_allocations()
        text = "".join(printed)
        figures = {k: int(v) for k, v in re.findall(r"Arena allocation (total|head|tail) (\d+) bytes", text)}
        if "total" not in figures:
            raise BuildError(
                "TFLite Micro's recording allocator printed no arena figures",
                hint=f"this tflite-micro ({tflm_version()}) prints them differently; uninstall it to use the estimate",
            )
        total = align(figures["total"])
        return ArenaFigure(
            bytes=total,
            activations_bytes=figures.get("head", 0),
            persistent_bytes=figures.get("tail", 0),
            margin_bytes=total - figures["total"],
            method="measured",
            how=(
                f"measured: TFLite Micro {tflm_version()} on the host, recording allocator, reference kernels; "
                "optimized kernels (CMSIS-NN, ESP-NN) may ask for scratch space on top, and a 32-bit "
                "core's structs are smaller than this 64-bit host's"
            ),
        )

