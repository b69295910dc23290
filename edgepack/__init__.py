"""edgepack: build, package and measure ML models for edge devices.

The public API, bound lazily (module `__getattr__`): `import edgepack` costs nothing until a
function is used, and nothing here imports TensorFlow or a runtime. No submodule shares a name
with a function here, so importing a submodule never shadows one.
"""

from __future__ import annotations

import importlib

from edgepack._version import __version__

_API = {
    "load_target": "edgepack.profile.store",
    "build": "edgepack.builder.pipeline",
    "bench": "edgepack.benchmark",
    "deploy": "edgepack.deployment",
    "gate": "edgepack.results.gate",
    "tune": "edgepack.tuning.study",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'edgepack' has no attribute '{name}'")
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
