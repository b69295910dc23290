"""The agent's side of the load cache: find an entry checked file by file, or make one in a staging directory."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time

from .agentbase import FORM_FILES, ONNX_FORMS, STAGING_STALE_S, TFLITE_FORMS
from .common import CACHE_FORMAT, META, artifact_stamp, entry_name, read_json, sha256_file, stamp_name
from .probes import median_of, probe_command, probe_loads, run_probe
from .tflite import LiteRtCompiled


def possible_forms(engine: str, runtime, notes: list) -> list:
    """The load-optimised forms this device's runtime can make for this engine (a note says why where none)."""
    if engine == "tflite":
        why = LiteRtCompiled.unavailable(runtime)
        if why:
            notes.append("no load-optimised TFLite form: " + why)
            return []
        return list(TFLITE_FORMS)
    if runtime.providers != ["CPUExecutionProvider"]:
        notes.append(
            "load-optimised ONNX graphs are made for CPUExecutionProvider only; with %s the TensorRT engine and timing "
            "caches (--cache-dir) are what spare a load its build" % ", ".join(runtime.providers)
        )
        return []
    return list(ONNX_FORMS)


def write_meta(entry: str, meta: dict, name: str = META) -> None:
    """Write ENTRY's meta.json (or NAME) whole or not at all."""
    part = os.path.join(entry, name + ".part%d" % os.getpid())
    with open(part, "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2)
    os.replace(part, os.path.join(entry, name))


def record_checked_artifact(cache_dir: str, model_path: str, sha: str, notes: list) -> None:
    """Record in CACHE_DIR that this bench checked the artifact's sha256, so that the loader need not hash it again."""
    try:
        write_meta(cache_dir, artifact_stamp(model_path, sha), stamp_name(sha))
    except OSError as exc:
        notes.append("could not record the checked artifact in %s (%s): the loader hashes it at each start"
                     % (cache_dir, exc.strerror or exc))


def file_entries(entry: str, names: list) -> list:
    out = []
    for name in names:
        path = os.path.join(entry, name)
        st = os.stat(path)
        out.append({"path": name, "bytes": st.st_size, "sha256": sha256_file(path), "mtime_ns": st.st_mtime_ns})
    return out


def checked_entry(entry: str, sha: str, runtime, forms: list):
    """Return (meta, None) for an entry whose every file matches its sha256, else (None, why it cannot be used).

    Where a file's content matches but its size or time stamp moved (the entry was copied), they are
    recorded again, so that edgepack_runtime.py (which checks only those) uses it.
    """
    path = os.path.join(entry, META)
    if os.path.islink(entry):
        return None, "is a symbolic link (the cache holds real directories only)"
    if not os.path.isdir(entry):
        return None, None
    meta, why = read_json(path)
    if why is not None:
        return None, "has an unreadable meta.json (%s)" % why
    if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT:
        return None, "is not load-cache format %d" % CACHE_FORMAT
    rt = meta.get("runtime") or {}
    if meta.get("model_sha256") != sha or rt.get("name") != runtime.name or rt.get("version") != runtime.version:
        return None, "is stale (made for another model or runtime version)"
    if meta.get("form") not in forms or not isinstance(meta.get("files"), list) or not meta["files"]:
        return None, "holds a form this runtime does not make (%r)" % meta.get("form")
    moved = False
    for f in meta["files"]:
        name = f.get("path") if isinstance(f, dict) else None
        fpath = os.path.join(entry, name) if isinstance(name, str) and os.path.basename(name) == name else None
        if fpath is None or not os.path.isfile(fpath):
            return None, "is missing %s" % name
        st = os.stat(fpath)
        if st.st_size != f.get("bytes") or sha256_file(fpath) != f.get("sha256"):
            return None, "is corrupt (%s does not match its sha256)" % name
        if st.st_mtime_ns != f.get("mtime_ns"):
            f["mtime_ns"], moved = st.st_mtime_ns, True
    if moved:
        write_meta(entry, meta)
    return meta, None


def writable_dir(path: str):
    """Make PATH if need be and show that a file can be written there; return None, or why not."""
    try:
        os.makedirs(path, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".edgepack-write-", dir=path)
        os.close(fd)
        os.remove(probe)
        return None
    except OSError as exc:
        return exc.strerror or str(exc)


def sweep_staging(cache_dir: str) -> None:
    """Remove staging directories that agents killed mid-way left in CACHE_DIR."""
    for name in os.listdir(cache_dir):
        path = os.path.join(cache_dir, name)
        try:
            if name.startswith(".") and ".part" in name and time.time() - os.lstat(path).st_mtime > STAGING_STALE_S:
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass


def make_entry(args, cache_dir: str, entry: str, sha: str, runtime, forms: list, notes: list):
    """Make the load-optimised form in a staging directory beside ENTRY, keep the fastest-loading one, and move it
    into place. Return its meta (``use`` false until the measurement says otherwise), or None where none could be made."""
    sweep_staging(cache_dir)
    staging = os.path.join(cache_dir, ".%s.part%d" % (os.path.basename(entry), os.getpid()))
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    try:
        made = []
        for form in forms:
            result = run_probe(probe_command(args, "--make-form", "--form", form, "--form-dir", staging))
            if result.get("ok"):
                made.append(form)
            else:
                notes.append("could not make the %s form: %s" % (form, result.get("error")))
        tried = {}
        if len(made) > 1:  # keep the one that loads fastest here
            for form in made:
                results, _, _, error = probe_loads(args, max(args.cold_loads, 1), False, "--form", form, "--form-dir", staging)
                tried[form] = median_of(results, "load_ms") if error is None else None
                if error is not None:
                    notes.append("the %s form does not load: %s" % (form, error))
            made = sorted([f for f in made if tried.get(f) is not None], key=lambda f: tried[f])
        if not made:
            return None
        form = made[0]
        names = [n for n in sorted(os.listdir(staging)) if n.startswith(FORM_FILES[form])]
        for name in os.listdir(staging):
            if name not in names:
                os.remove(os.path.join(staging, name))
        meta = {
            "format": CACHE_FORMAT,
            "model_sha256": sha,
            "runtime": {"name": runtime.name, "version": runtime.version},
            "form": form,
            "model": FORM_FILES[form],
            "files": file_entries(staging, names),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "tried_warm_ms": tried,
            "use": False,
            "why": "not measured yet",
        }
        write_meta(staging, meta)
        if os.path.isdir(entry):
            shutil.rmtree(entry)
        os.rename(staging, entry)
        return meta
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def prepare_load_cache(args, engine: str, runtime, sha: str, notes: list):
    """Find this model's load-cache entry, checked file by file, or make it; return (entry, meta, created) or None."""
    forms = possible_forms(engine, runtime, notes)
    if not forms:
        return None
    cache_dir = args.load_cache_dir
    why = writable_dir(cache_dir)
    if why is not None:
        notes.append("load cache %s is not writable (%s): measured the plain load only" % (cache_dir, why))
        return None
    entry = os.path.join(cache_dir, entry_name(sha, runtime.name, runtime.version))
    meta, why = checked_entry(entry, sha, runtime, forms)
    if meta is not None:
        return entry, meta, False
    if why is not None:
        notes.append("load cache entry %s %s: made again, not used" % (entry, why))
        if os.path.islink(entry):
            os.unlink(entry)  # the link itself, never what it points to
        shutil.rmtree(entry, ignore_errors=True)
    prefix = sha[:32] + "-"
    for name in os.listdir(cache_dir):  # the same model's entries for another runtime version are stale now
        if name.startswith(prefix) and name != os.path.basename(entry):
            shutil.rmtree(os.path.join(cache_dir, name), ignore_errors=True)
            notes.append("removed the load cache entry %s: made for another %s version" % (name, runtime.name))
    try:
        meta = make_entry(args, cache_dir, entry, sha, runtime, forms, notes)
    except OSError as exc:
        notes.append("load cache %s could not be written (%s): measured the plain load only" % (cache_dir, exc.strerror or exc))
        return None
    return (entry, meta, True) if meta is not None else None
