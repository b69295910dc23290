"""edgepack: build, package and measure ML models for edge devices.

The public API is re-exported here lazily, so that `import edgepack` stays light.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "load_target"]


def __getattr__(name: str):
    if name == "load_target":
        from edgepack.profile.store import load_target

        return load_target
    raise AttributeError(f"module 'edgepack' has no attribute {name!r}")
