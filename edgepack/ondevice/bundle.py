"""Read a bundle on the device and check every file against its manifest."""

from __future__ import annotations

import os

from .agentbase import AgentFailure, SUFFIX_ENGINE, SUFFIX_ENGINES
from .common import artifact_problem, manifest_of, np, sha256_file


def read_bundle(bundle: str, check: bool = True):
    """Return (manifest dict, model path, reference dict or None); with CHECK, every file is checked against the manifest."""
    if not os.path.isdir(bundle):
        raise AgentFailure("no such bundle directory: %s" % bundle)
    manifest, why = manifest_of(bundle)
    if why is not None:
        raise AgentFailure(why)
    model_path = os.path.join(bundle, manifest["artifact"])
    if not os.path.isfile(model_path):
        raise AgentFailure("artifact %s is missing from the bundle" % manifest["artifact"])
    why = artifact_problem(bundle, manifest["artifact"])  # the rule the loader keeps: a file of the bundle itself
    if why is not None:
        raise AgentFailure(why)
    if check:
        check_files(bundle, manifest.get("files") or [])
    reference = None
    ref_path = os.path.join(bundle, "reference.npz")
    if os.path.isfile(ref_path):
        try:
            with np.load(ref_path, allow_pickle=False) as z:
                reference = {k: z[k] for k in z.files}
        except Exception as exc:
            raise AgentFailure("unreadable reference.npz: %s" % exc)
    return manifest, model_path, reference


def check_files(bundle: str, entries) -> None:
    """Check every file the manifest lists against its size and sha256, as it arrived on the device."""
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str) or os.path.basename(entry["path"]) != entry["path"]:
            raise AgentFailure("manifest.json lists a file it cannot name: %r" % (entry,))
        path = os.path.join(bundle, entry["path"])
        if not os.path.isfile(path):
            raise AgentFailure("%s is missing from the bundle" % entry["path"])
        if os.path.getsize(path) != entry.get("bytes") or sha256_file(path) != entry.get("sha256"):
            raise AgentFailure("%s does not match the manifest (its size or sha256 changed after the build)" % entry["path"])


def pick_engine(model_path: str, requested, manifest=None) -> str:
    suffix = os.path.splitext(model_path)[1].lower()
    implied = SUFFIX_ENGINE.get(suffix)
    if requested and implied and requested not in SUFFIX_ENGINES.get(suffix, ()):
        raise AgentFailure("--engine %s cannot load a %s artifact (use --engine %s)" % (requested, suffix, implied))
    if not requested and manifest is not None:  # the engine the bundle's profile names, where it loads this artifact
        profiled = ((manifest.get("profile") or {}).get("runtime") or {}).get("engine")
        requested = profiled if profiled in SUFFIX_ENGINES.get(suffix, ()) else None
    engine = requested or implied
    if engine is None:
        raise AgentFailure("cannot tell the runtime for artifact %s: pass --engine" % os.path.basename(model_path))
    return engine


def load_cache_sha(manifest: dict, model_path: str) -> str:
    """The artifact's sha256: as the manifest lists it (the agent has checked the file against it)."""
    found = next((f.get("sha256") for f in manifest.get("files") or [] if isinstance(f, dict) and f.get("path") == manifest["artifact"]), None)
    return found or sha256_file(model_path)
