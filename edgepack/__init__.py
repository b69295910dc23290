"""edgepack: build, package and measure ML models for edge devices.

The public API. `build` and `bench` share their names with the modules that hold them
(`edgepack.build`, `edgepack.bench`), so they are bound here eagerly: a lazy lookup would lose
to the submodule as soon as it is imported. Nothing here imports TensorFlow or a runtime.
"""

from __future__ import annotations

__version__ = "0.1.0"

from edgepack.bench import bench, deploy  # noqa: E402
from edgepack.build.pipeline import build  # noqa: E402
from edgepack.profile.store import load_target  # noqa: E402

__all__ = ["__version__", "bench", "build", "deploy", "load_target"]
