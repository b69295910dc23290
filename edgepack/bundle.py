"""Write and read a bundle: the artifact, its manifest, and reference inputs/outputs.

A bundle is a directory:
  model.tflite | model.onnx   the artifact (a microcontroller bundle adds model_data.cc/.h)
  manifest.json                `Manifest` below
  reference.npz                in_0, in_1, ...: a few float inputs as the *original* model takes
                               them; out_0, out_1, ...: the original model's float outputs on
                               them. The agent feeds the inputs (quantizing where the artifact
                               takes integers) and compares its outputs with out_*.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, ValidationError

from edgepack import __version__
from edgepack.atomic import replace_dir, temp_dir_beside
from edgepack.errors import EdgepackError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
REFERENCE = "reference.npz"


class TensorSpec(BaseModel):
    """One input or output of the artifact, as the runtime sees it."""

    name: str
    shape: list[Optional[int]]  # None for a dynamic dimension
    dtype: str  # numpy dtype name: float32, int8, uint8, float16
    scale: Optional[float] = None  # quantization: real = scale * (q - zero_point)
    zero_point: Optional[int] = None


class FileEntry(BaseModel):
    path: str
    bytes: int
    sha256: str


class SourceInfo(BaseModel):
    path: str
    kind: str  # keras, savedmodel, onnx
    sha256: str
    params: Optional[int] = None


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    edgepack_version: str = __version__
    created: str
    status: str  # "ok", or "failed" when a budget or the fidelity gate was missed
    target: str
    artifact: str  # file name of the model the runtime loads
    format: str
    precision: str
    source: SourceInfo
    profile: dict[str, Any]  # the resolved profile
    build: dict[str, Any]  # settings actually used (after the plan), incl. data and scaling
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    fidelity: dict[str, Any]
    tools: dict[str, str]  # versions of tensorflow, onnx, onnxruntime, ... that built it
    facts: dict[str, Any] = {}  # format-specific: tensor arena and fit (tflite-micro), opset (onnx)
    notes: list[str] = []  # loud facts a user must see: synthetic calibration, failed gates
    files: list[FileEntry] = []


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_bundle(out_dir: Path, manifest: Manifest, files: dict[str, Path | bytes], reference: dict) -> Path:
    """Write a bundle atomically: into a temporary sibling directory, then renamed into place.

    Args:
        out_dir: the bundle directory to create or replace.
        manifest: the manifest; its ``files`` list is filled in here.
        files: bundle file name -> a path to copy or the bytes to write.
        reference: arrays for reference.npz.

    Returns:
        out_dir.
    """
    import numpy as np

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir_beside(out_dir)
    try:
        for name, content in files.items():
            if isinstance(content, bytes):
                (tmp / name).write_bytes(content)
            else:
                shutil.copyfile(content, tmp / name)
        np.savez(tmp / REFERENCE, **reference)
        entries = []
        for path in sorted(tmp.iterdir()):
            entries.append(FileEntry(path=path.name, bytes=path.stat().st_size, sha256=sha256_file(path)))
        manifest = manifest.model_copy(update={"files": entries})
        (tmp / MANIFEST).write_text(manifest.model_dump_json(indent=2) + "\n")
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def read_manifest(bundle: Path) -> Manifest:
    """Read and validate a bundle's manifest.

    Raises:
        EdgepackError: not a bundle directory, or a manifest edgepack cannot read.
    """
    bundle = Path(bundle)
    path = bundle / MANIFEST
    if not bundle.is_dir():
        raise EdgepackError(f"{bundle}: no such bundle directory", hint="pass the directory `edgepack build` wrote")
    if not path.is_file():
        raise EdgepackError(f"{bundle}: not a bundle (no {MANIFEST})", hint="pass the directory `edgepack build` wrote")
    try:
        return Manifest.model_validate(json.loads(path.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError, ValidationError) as exc:
        raise EdgepackError(f"{path}: unreadable manifest: {str(exc).splitlines()[0]}", hint="rebuild the bundle") from None
