"""A content-addressed cache of finished bundles in the user cache directory.

The key covers everything that decides the artifact: the model's bytes, the data's bytes, the
resolved build settings and the versions of the tools. Entries are written to a temporary
directory and renamed into place, so an interrupted or concurrent build never leaves a broken one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from edgepack.atomic import replacing_dir, temp_dir_beside
from edgepack.bundle import check_replaceable
from edgepack.bundle import MANIFEST


def cache_root() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("edgepack")) / "builds"


def cache_key(model_sha256: str, data_sha256: str, settings: dict, tools: dict) -> str:
    """Return the hex key for a build."""
    blob = json.dumps({"model": model_sha256, "data": data_sha256, "settings": settings, "tools": tools}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def lookup(key: str) -> Path | None:
    """Return the cached bundle for KEY, or None."""
    entry = cache_root() / key
    return entry if (entry / MANIFEST).is_file() else None


def store(bundle: Path, key: str) -> None:
    """Copy BUNDLE into the cache under KEY (an existing entry is kept: it is the same build)."""
    root = cache_root()
    try:  # the cache is a speed-up: a cache that cannot be written never fails a build
        root.mkdir(parents=True, exist_ok=True)
        if lookup(key):
            return
        tmp = temp_dir_beside(root / key)
    except OSError:
        return
    try:
        shutil.copytree(bundle, tmp, dirs_exist_ok=True)
        os.rename(tmp, root / key)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # another build stored it first


def restore(key: str, out: Path) -> Path:
    """Copy the cached bundle KEY to OUT atomically.

    Raises:
        EdgepackError: OUT cannot be written (permissions, space), or is no longer a bundle to replace.
    """
    with replacing_dir(out, "the bundle", check_replaceable) as tmp:
        shutil.copytree(cache_root() / key, tmp, dirs_exist_ok=True)
    return out
