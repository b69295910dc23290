"""Write and read a bundle: the artifact, its manifest, and reference inputs/outputs.

A bundle is a directory:
  model.tflite | model.onnx   the artifact (a microcontroller bundle adds model_data.cc/.h)
  manifest.json                `Manifest` below
  reference.npz                in_0, in_1, ...: a few float inputs as the *original* model takes
                               them; out_0, out_1, ...: the original model's float outputs on
                               them. The agent feeds the inputs (quantizing where the artifact
                               takes integers) and compares its outputs with out_*.
  edgepack_runtime.py          the loader for apps (assembled from edgepack/ondevice/), listed in the manifest
                               like every file; bundles written before it have none.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edgepack._version import __version__
from edgepack.agent.assemble import loader_file
from edgepack.atomic import replacing_dir
from edgepack.errors import EdgepackError
from edgepack.ondevice.common import sha256_file  # one hash for host and device: the bundle's files are checked with it on both
from edgepack.profile.schema import Format, Precision, Profile

# 2: profile, fidelity and facts are typed models, format/precision/status enums (0.1.0 wrote 1,
# the same JSON with no types behind it: it reads as 2 unchanged, see `migrate`).
SCHEMA_VERSION = 2
MANIFEST = "manifest.json"
REFERENCE = "reference.npz"
LOADER = "edgepack_runtime.py"


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


class Status(str, Enum):
    ok = "ok"
    failed = "failed"  # a budget or the fidelity gate was missed


class Typed(BaseModel):
    # Non-finite figures (a broken artifact's errors) are written as JSON's Infinity / NaN, which
    # json.loads reads back: null would not read as a float.
    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants")


class Fidelity(Typed):
    """How the artifact answers compared with the original model, and the budgets it missed."""

    n_samples: int
    max_abs_error: float
    mean_abs_error: float
    top1_agreement: Optional[float] = None  # None where the first output is not a class score
    accuracy_original: Optional[float] = None  # where labels exist
    accuracy_artifact: Optional[float] = None
    accuracy_drop: Optional[float] = None
    passed: bool = True
    failures: list[str] = Field(default_factory=list)
    accuracy_failed: bool = False  # the answers missed the gate (as opposed to size or fit)
    outputs: list[OutputFidelity] = Field(default_factory=list)  # every output (0.1.0 bundles have none)
    metric: Optional[float] = None  # verify.metric's value, where the profile names one
    pruning: Optional[Fidelity] = None  # the pruned float model against the original: pruning's own loss


class OutputFidelity(Typed):
    """One output of the artifact against the original's: the worst output decides the gate."""

    name: str
    kind: str  # classes | dense (edgepack.profile.schema.OutputKind)
    sqnr_db: float  # on the output's variation around its mean; 150 for identical answers
    cosine: float  # mean over samples
    max_rel_error: float  # max |error| over the original output's range
    mean_rel_error: float
    top1_agreement: Optional[float] = None  # classes outputs
    passed: bool = True


class LayerPrecision(Typed):
    layer: str
    op: str
    precision: str


class QuantizationFacts(Typed):
    """What quantization did: the strategy that passed, every attempt, the worst layers, each op's precision."""

    strategy: str = "plain"
    attempts: list[dict[str, Any]] = Field(default_factory=list)  # edgepack.builder.recover.common.Attempt
    layer_errors: list[dict[str, Any]] = Field(default_factory=list)  # edgepack.builder.recover.common.LayerError
    explain_error: Optional[str] = None
    layers: list[LayerPrecision] = Field(default_factory=list)


class FitPart(Typed):
    needed: int
    available: float
    fits: bool
    terms: dict[str, int]


class Fit(Typed):
    fits: bool
    flash: FitPart
    ram: FitPart


class MicroFacts(Typed):
    """A microcontroller build's static figures: ops, tensor arena, flash/RAM fit, latency estimate."""

    ops: list[dict[str, Any]]  # {op, version, count}
    arena: dict[str, Any]  # edgepack.micro.arena.Arena
    fit: Fit
    latency: dict[str, Any]  # edgepack.micro.fit.latency
    largest: dict[str, Any]
    host_check: Optional[dict[str, str]] = None


class Facts(Typed):
    """Format-specific facts: each key is named here, so a misspelt one is an error, not a silent None."""

    quantization: QuantizationFacts = Field(default_factory=QuantizationFacts)
    micro: Optional[MicroFacts] = None
    # ONNX: where the graph came from and what it is.
    source_opset: Optional[int] = None
    exported_by: Optional[str] = None
    opset_upgraded: Optional[str] = None
    opset: Optional[int] = None
    ir_version: Optional[int] = None
    nodes: Optional[int] = None
    fp16: Optional[dict[str, Any]] = None  # edgepack.builder.convert.onnx: the converter, and the nodes kept in fp32
    onnx_quantization: Optional[dict[str, Any]] = None  # edgepack.builder.convert.onnx_quant
    accelerator: Optional[list[dict[str, Any]]] = None  # edgepack.builder.accelerator.Coverage, per accelerator


class Manifest(Typed):
    schema_version: int = SCHEMA_VERSION
    edgepack_version: str = __version__
    created: str
    status: Status
    target: str
    artifact: str  # file name of the model the runtime loads
    format: Format
    precision: Precision
    source: SourceInfo
    profile: Profile  # the resolved profile
    build: dict[str, Any]  # settings actually used (after the plan), incl. data and scaling
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    fidelity: Fidelity
    tools: dict[str, str]  # versions of tensorflow, onnx, onnxruntime, ... that built it
    facts: Facts = Field(default_factory=Facts)
    notes: list[str] = Field(default_factory=list)  # loud facts a user must see: synthetic calibration, failed gates
    files: list[FileEntry] = Field(default_factory=list)

    @field_validator("profile", mode="before")
    @classmethod
    def resolved_profile(cls, value: Any) -> Any:
        # A resolved profile carries every section, build.onnx (all defaults) for any format too;
        # a user profile may not, and `Profile` says so. Reading one back drops what has no effect.
        if isinstance(value, dict) and isinstance(value.get("build"), dict) and value["build"].get("format") != "onnx":
            value = dict(value, build={k: v for k, v in value["build"].items() if k != "onnx"})
        return value

    @property
    def passed(self) -> bool:
        return self.status is Status.ok

    @property
    def peak_rss_mb(self) -> Optional[float]:
        """The build's peak resident memory in MB (`build.peak_rss_mb`; None in manifests from before it was recorded)."""
        value = self.build.get("peak_rss_mb")
        return float(value) if value is not None else None

    @property
    def artifact_bytes(self) -> Optional[int]:
        return next((f.bytes for f in self.files if f.path == self.artifact), None)


def migrate(doc: dict, path: Path) -> dict:
    """Bring the manifest PATH, written by an older edgepack, forward to SCHEMA_VERSION.

    Raises:
        EdgepackError: a schema_version this edgepack does not know (a newer edgepack wrote it).
    """
    version = doc.get("schema_version")
    if version == 1:  # 0.1.0: the same keys, untyped
        doc = dict(doc, schema_version=2)
    elif version != SCHEMA_VERSION:
        raise EdgepackError(
            f"{path}: manifest schema_version {version!r} is not one this edgepack reads (1 to {SCHEMA_VERSION})",
            hint="rebuild the bundle with this edgepack, or use the edgepack version that wrote it",
        )
    return doc


def bundle_sha256(bundle: Path) -> str:
    """The bundle's identity: the sha256 of its manifest, which holds every file's sha256."""
    return hashlib.sha256((Path(bundle) / MANIFEST).read_bytes()).hexdigest()


def bundle_id(bundle: Path) -> str:
    """Name of the bundle's directory on the device: a hash of its manifest (which hashes every file)."""
    return "bundle-" + bundle_sha256(bundle)[:16]


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_bundle(out_dir: Path, manifest: Manifest, files: dict[str, Path | bytes], reference: dict) -> Path:
    """Write a bundle atomically: into a temporary sibling directory, then renamed into place.

    Args:
        out_dir: the bundle directory to create or replace.
        manifest: the manifest; its ``files`` list is filled in here.
        files: bundle file name -> a path to copy or the bytes to write; the loader for apps
            (edgepack_runtime.py) is added.
        reference: arrays for reference.npz.

    Returns:
        out_dir.
    """
    import numpy as np

    out_dir = Path(out_dir)
    files = {LOADER: loader_file(), **files}
    # Checked again right before the rename: the build took a while, and OUT may have changed.
    with replacing_dir(out_dir, "the bundle", check_replaceable) as tmp:
        for name, content in files.items():
            if isinstance(content, bytes):
                (tmp / name).write_bytes(content)
            else:
                shutil.copyfile(content, tmp / name)
        np.savez(tmp / REFERENCE, **reference)
        entries = [FileEntry(path=p.name, bytes=p.stat().st_size, sha256=sha256_file(p)) for p in sorted(tmp.iterdir())]
        manifest = manifest.model_copy(update={"files": entries})
        (tmp / MANIFEST).write_text(manifest.model_dump_json(indent=2) + "\n")
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
        doc = json.loads(path.read_text())
        if not isinstance(doc, dict):
            raise EdgepackError(f"{path}: unreadable manifest: not a JSON object", hint="rebuild the bundle")
        return Manifest.model_validate(migrate(doc, path))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise EdgepackError(f"{path}: unreadable manifest: {where}: {first['msg']}", hint="rebuild the bundle") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EdgepackError(f"{path}: unreadable manifest: {str(exc).splitlines()[0]}", hint="rebuild the bundle") from None


def not_a_bundle(path: Path) -> Optional[str]:
    """Say why the existing directory PATH is not a bundle edgepack wrote (None: it is one, and only that).

    A directory is a bundle when its manifest reads as an edgepack manifest, and it holds nothing
    but the files that manifest lists, each as it was built (size and sha256): `--out` replaces
    such a directory, and nothing else.
    """
    path = Path(path)
    try:
        if not (path / MANIFEST).is_file():
            return f"it has no {MANIFEST}"
        try:
            manifest = read_manifest(path)
        except EdgepackError:
            return f"its {MANIFEST} is not an edgepack manifest"
        others = sorted({entry.name for entry in path.iterdir()} - {f.path for f in manifest.files} - {MANIFEST})
        if others:
            shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
            return f"it also holds files edgepack did not write: {shown}"
        try:
            check_files(path, manifest)
        except EdgepackError as exc:
            return "its files are not as built: " + exc.message.split(": ", 1)[-1]
    except OSError as exc:
        return f"it cannot be read: {exc.strerror or exc}"
    return None


def check_replaceable(out: Path) -> None:
    """Check, right before it is replaced, that OUT is new or a bundle edgepack wrote and nothing else.

    Raises:
        EdgepackError: OUT exists and is not such a bundle (it is never replaced).
    """
    out = Path(out)
    if not out.exists() and not out.is_symlink():
        return
    reason = "it is not a directory" if not out.is_dir() or out.is_symlink() else not_a_bundle(out)
    if reason:
        raise EdgepackError(
            f"{out} already exists and is not a bundle: edgepack will not replace it ({reason})",
            hint="pick another --out (a new directory, or an earlier bundle to replace)",
        )


def check_files(bundle: Path, manifest: Manifest) -> None:
    """Check every file MANIFEST lists against its size and sha256: edgepack measures only what it built.

    Raises:
        EdgepackError: the artifact is not listed, a file is missing, or one changed after the build.
    """
    bundle = Path(bundle)
    listed = {f.path for f in manifest.files}
    if manifest.artifact not in listed:
        raise EdgepackError(f"{bundle}: the manifest does not list its artifact {manifest.artifact}", hint="rebuild it with edgepack build")
    missing = [f.path for f in manifest.files if Path(f.path).name != f.path or not (bundle / f.path).is_file()]
    if missing:
        raise EdgepackError(f"{bundle}: incomplete bundle, missing {', '.join(missing)}", hint="rebuild it with edgepack build")
    for f in manifest.files:
        path = bundle / f.path
        try:
            changed = path.stat().st_size != f.bytes or sha256_file(path) != f.sha256
        except OSError as exc:
            raise EdgepackError(f"{bundle}: cannot read {f.path}: {exc.strerror or exc}", hint="check the bundle's file permissions") from None
        if changed:
            raise EdgepackError(
                f"{bundle}: {f.path} does not match the manifest: it changed after the build",
                hint="rebuild the bundle with edgepack build (its manifest describes what was built and checked)",
            )

