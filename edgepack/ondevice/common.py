"""What the agent and the loader share: numpy (or why it is missing), the load cache's names, delegates, hashing, cores."""

from __future__ import annotations

import hashlib
import json
import os
import re


NUMPY_ERROR = None  # why numpy did not import, where it did not
try:
    import numpy as np
except ImportError as exc:  # reported as ok:false by the agent, as a LoadError by the loader
    np = None
    NUMPY_ERROR = str(exc)


# Where a delegate name is not a path, the libraries to try, in order.
DELEGATE_LIBRARIES = {
    "gpu": ["libtensorflowlite_gpu_delegate.so", "libtensorflowlite_gpu_gl.so"],
    "edgetpu": ["libedgetpu.so.1"],
}


# The load cache (shared with edgepack_runtime.py): <load-cache>/<entry_name(...)>/meta.json + the form's files.
CACHE_FORMAT = 1
LOAD_CACHE_DIR = "load-cache"
META = "meta.json"


def entry_name(model_sha256: str, runtime: str, version) -> str:
    """Name of a model's load-cache entry (the agent makes it, the loader looks it up): its sha256, the runtime's name and version."""
    return "%s-%s-%s" % (model_sha256[:32], safe_name(runtime), safe_name(version or "unknown"))


def safe_name(text) -> str:
    """TEXT with every run of characters other than letters, digits, dot and underscore made one underscore."""
    return re.sub(r"[^A-Za-z0-9._]+", "_", str(text))


def sha256_file(path: str) -> str:
    """The sha256 of the file at PATH, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def usable_cores():
    """The cores this process may run on (its affinity), else the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def artifact_problem(bundle_dir: str, artifact: str):
    """Why ARTIFACT is not a file of the bundle BUNDLE_DIR itself (a path, a link out of it, missing), or None."""
    if os.path.basename(artifact) != artifact or artifact in ("", ".", ".."):
        return "the manifest names the artifact %r: a bundle's artifact is a file of the bundle, named without a path" % artifact
    full = os.path.join(bundle_dir, artifact)
    if not os.path.isfile(full):
        return "the artifact %s is missing from the bundle" % artifact
    if os.path.dirname(os.path.realpath(full)) != os.path.realpath(bundle_dir):
        return "the artifact %s is a link to a file outside the bundle" % artifact
    return None


def manifest_of(bundle_dir: str):
    """Return (BUNDLE_DIR's manifest.json as a dict naming an artifact, None), else (None, why not)."""
    path = os.path.join(bundle_dir, "manifest.json")
    if not os.path.isfile(path):
        return None, "not a bundle (no manifest.json): %s" % bundle_dir
    manifest, why = read_json(path)
    if why is not None:
        return None, "unreadable %s: %s" % (path, why)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("artifact"), str):
        return None, "%s names no artifact" % path
    return manifest, None


def read_json(path: str):
    """Return (the JSON document in PATH, None), else (None, why it cannot be read)."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            return json.load(f), None
    except (OSError, ValueError) as exc:
        return None, str(exc)


def stamp_name(model_sha256: str) -> str:
    """The load cache's record that the bench checked an artifact of this sha256: ``verified-<sha256[:32]>.json``."""
    return "verified-%s.json" % model_sha256[:32]


def artifact_stamp(path: str, model_sha256: str) -> dict:
    """What identifies the file at PATH as the one whose sha256 was checked: where it is, its size, its times, its inode.

    The change time is set by the kernel on every write and cannot be set back, so a file replaced
    after the check (even with its old size and modification time restored) no longer matches.
    """
    st = os.stat(path)
    return {"format": CACHE_FORMAT, "path": os.path.realpath(path), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns,
            "ctime_ns": st.st_ctime_ns, "inode": st.st_ino, "device": st.st_dev, "sha256": model_sha256}
