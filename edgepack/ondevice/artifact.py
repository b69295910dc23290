"""The loader's view of a bundle: its manifest, its artifact checked against the manifest, its tensors."""

from __future__ import annotations

import os
import stat
import threading

from .common import NUMPY_ERROR, artifact_problem, artifact_stamp, manifest_of, np, read_json, sha256_file, stamp_name


class LoadError(RuntimeError):
    """The bundle cannot be loaded: not a bundle, no runtime for it, or the runtime rejected the model."""


VERIFIED = {}  # (real path, size, mtime_ns, ctime_ns, inode, sha256) -> True: the artifacts this process has checked
VERIFIED_LOCK = threading.Lock()


def read_manifest(bundle_dir: str) -> dict:
    """Read BUNDLE_DIR's manifest.json; its artifact must be a file of the bundle itself (no path, no link out of it).

    Raises:
        LoadError: not a bundle, or an artifact named with a path or lying outside the bundle.
    """
    if np is None:
        raise LoadError("numpy is not importable: %s" % NUMPY_ERROR)
    manifest, why = manifest_of(bundle_dir)
    if why is not None:
        raise LoadError(why)
    why = artifact_problem(bundle_dir, manifest["artifact"])
    if why is not None:
        raise LoadError("%s: %s" % (bundle_dir, why))
    return manifest


def listed_artifact(manifest: dict, bundle_dir: str) -> dict:
    """The manifest's entry (path, bytes, sha256) for its artifact.

    Raises:
        LoadError: the manifest lists no size and sha256 for it.
    """
    for f in manifest.get("files") or []:
        if isinstance(f, dict) and f.get("path") == manifest["artifact"] and isinstance(f.get("sha256"), str) \
                and isinstance(f.get("bytes"), int):
            return f
    raise LoadError("%s: the manifest lists no size and sha256 for the artifact %s, so it cannot be checked"
                    % (bundle_dir, manifest["artifact"]))


def stamped(cache_dir, path: str, model_sha256: str) -> bool:
    """Whether the bench recorded in CACHE_DIR that it checked this very file (same place, size, times, inode)."""
    if not cache_dir:
        return False
    stamp = os.path.join(cache_dir, stamp_name(model_sha256))
    try:
        if not stat.S_ISREG(os.lstat(stamp).st_mode):
            return False  # never a link
    except OSError:
        return False
    recorded, why = read_json(stamp)
    return why is None and recorded == artifact_stamp(path, model_sha256)


def artifact_sha256(manifest: dict, bundle_dir: str, cache_dir=None) -> str:
    """The artifact's sha256 after checking the file against the manifest's size and sha256.

    The file is hashed once per process for each (size, modification time) it has: an app's
    second load, or a load of the same unchanged file, costs a stat. Where the bench on this
    device checked this very file (its record in CACHE_DIR names the file's place, size, times
    and inode; the change time cannot be set back after a write), the loader takes its word.

    Raises:
        LoadError: the file's size or sha256 is not the manifest's (the model was replaced after the build).
    """
    entry = listed_artifact(manifest, bundle_dir)
    path = os.path.realpath(os.path.join(bundle_dir, manifest["artifact"]))
    try:
        st = os.stat(path)
    except OSError as exc:
        raise LoadError("%s: cannot read the artifact: %s" % (bundle_dir, exc))
    key = (path, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, entry["sha256"])
    with VERIFIED_LOCK:
        if key in VERIFIED:
            return entry["sha256"]
    if st.st_size != entry["bytes"] or (not stamped(cache_dir, path, entry["sha256"]) and sha256_file(path) != entry["sha256"]):
        raise LoadError("cannot load %s: %s does not match the manifest (its size or sha256 changed after the build); "
                        "rebuild the bundle or copy it again" % (bundle_dir, manifest["artifact"]))
    with VERIFIED_LOCK:
        VERIFIED[key] = True
    return entry["sha256"]


def profile_runtime(manifest: dict) -> dict:
    """The bundle profile's runtime section (threads, delegates, providers), or {}."""
    runtime = (manifest.get("profile") or {}).get("runtime") or {}
    return runtime if isinstance(runtime, dict) else {}


def positions(runtime_names: list, manifest_names: list, kind: str) -> list:
    """Where each manifest tensor sits among the runtime's: by name, else by position."""
    if sorted(runtime_names) == sorted(manifest_names):
        return [runtime_names.index(n) for n in manifest_names]
    if len(runtime_names) != len(manifest_names):
        raise LoadError("the model has %d %s; the manifest lists %d" % (len(runtime_names), kind, len(manifest_names)))
    return list(range(len(manifest_names)))


class AppSpec:
    """One manifest input or output: name, shape (None: dynamic), the runtime's dtype, quantization."""

    def __init__(self, d: dict):
        self.name = d.get("name")
        self.shape = list(d.get("shape") or [])
        self.dtype = np.dtype(d.get("dtype") or "float32")
        self.scale = d.get("scale") or None
        self.zero_point = int(d.get("zero_point") or 0)

    def to_runtime(self, x):
        x = np.asarray(x)
        if self.dtype.kind in "iu" and self.scale:
            info = np.iinfo(self.dtype)
            q = np.round(x.astype(np.float64) / self.scale + self.zero_point)
            return np.clip(q, info.min, info.max).astype(self.dtype)
        return np.ascontiguousarray(x, dtype=self.dtype)

    def to_float(self, y):
        y = np.asarray(y)
        if y.dtype.kind in "iu" and self.scale:
            return ((y.astype(np.float32) - self.zero_point) * np.float32(self.scale)).astype(np.float32)
        return y.astype(np.float32)
