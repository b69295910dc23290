"""The loader's side of the load cache: whether an entry the agent made may be used, without hashing and without links."""

from __future__ import annotations

import os
import stat

from .common import CACHE_FORMAT, META, read_json

FORMS = ("onnx-optimized", "ort-format", "xnnpack-weight-cache")


def regular_file(path: str):
    """os.lstat of PATH where it is a regular file (never a symbolic link), else None."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st if stat.S_ISREG(st.st_mode) else None


def usable_entry(entry: str, model_sha256: str, runtime: str, version, forced: bool = False):
    """Return the entry's meta.json where the loader may use it, else (None, why not).

    Cheap enough for every load: no hashing. The agent checked each file's sha256 when it made
    or last checked the entry and recorded its size and modification time; a file changed since
    (rewritten, truncated, copied) no longer matches them. A symbolic link anywhere in the entry
    (the entry itself, meta.json, a file) is refused: the loader never follows a link in the cache.
    FORCED ignores ``use`` (the bench's own measurement of the form).
    """
    path = os.path.join(entry, META)
    if os.path.islink(entry) or os.path.islink(path):
        return None, "%s is a symbolic link: the loader does not follow links in the load cache" % (entry if os.path.islink(entry) else path)
    if not os.path.isfile(path):
        return None, "no load-optimised form in %s" % entry
    meta, why = read_json(path)
    if why is not None:
        return None, "unreadable %s: %s" % (path, why)
    if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT:
        return None, "%s is not load-cache format %d" % (path, CACHE_FORMAT)
    rt = meta.get("runtime") or {}
    if meta.get("model_sha256") != model_sha256 or rt.get("name") != runtime or rt.get("version") != version:
        return None, "%s was made for another model or runtime version" % path
    if meta.get("form") not in FORMS or not isinstance(meta.get("model"), str):
        return None, "%s names a form this loader does not know: %r" % (path, meta.get("form"))
    files = meta.get("files")
    if not isinstance(files, list) or not files or not all(isinstance(f, dict) and os.path.basename(str(f.get("path"))) == f.get("path") for f in files) \
            or meta["model"] not in [f["path"] for f in files]:
        return None, "%s does not list its files (the model among them)" % path
    for f in files:
        fpath = os.path.join(entry, f["path"])
        if os.path.islink(fpath):
            return None, "%s is a symbolic link: the loader does not follow links in the load cache" % fpath
        st = regular_file(fpath)
        if st is None:
            return None, "a file of %s is missing" % entry
        if st.st_size != f.get("bytes") or st.st_mtime_ns != f.get("mtime_ns"):
            return None, "%s changed after the bench checked it" % fpath
    if meta.get("answers_ok") is not True:
        return None, "the bench did not find the %s form's answers as good as the plain load's: %s" % (meta["form"], meta.get("why") or "not checked")
    if not forced and meta.get("use") is not True:
        return None, "the bench found the %s form no faster: %s" % (meta["form"], meta.get("why") or "no reason given")
    return meta, None
