"""The bundle manifest is typed end to end, and bundles written by edgepack 0.1.0 still read and bench."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgepack.bundle import MANIFEST, SCHEMA_VERSION, Status, read_manifest, sha256_file
from edgepack.cli.app import app
from edgepack.errors import EdgepackError
from edgepack.profile.schema import Format, Precision

FIXTURE = Path(__file__).parent / "fixtures" / "manifest-0.1.0.json"
runner = CliRunner()


def old_bundle(digits_bundles, where: Path) -> Path:
    """A bundle as edgepack 0.1.0 wrote it: the fixture's manifest over this build's int8 artifact."""
    where.mkdir()
    source = digits_bundles["int8"]
    doc = json.loads(FIXTURE.read_text())
    doc["files"] = []
    for name in ("model.tflite", "reference.npz"):
        shutil.copyfile(source / name, where / name)
        doc["files"].append({"path": name, "bytes": (where / name).stat().st_size, "sha256": sha256_file(where / name)})
    (where / MANIFEST).write_text(json.dumps(doc, indent=2))
    return where


@pytest.mark.slow
def test_a_0_1_0_bundle_reads_typed_and_benches(digits_bundles, tmp_path):
    bundle = old_bundle(digits_bundles, tmp_path / "old")
    m = read_manifest(bundle)
    assert m.schema_version == SCHEMA_VERSION == 2
    assert m.status is Status.ok and m.format is Format.tflite and m.precision is Precision.int8
    assert m.profile.budgets.max_accuracy_drop == 0.01 and m.profile.runtime.threads == 4
    assert m.fidelity.top1_agreement == 1.0 and m.facts.quantization.strategy == "plain"
    result = runner.invoke(app, ["bench", str(bundle), "--runs", "10", "--warmup", "1", "--min-seconds", "0", "--cold-loads", "1", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["report"]["ok"] and data["precision"] == "int8" and data["report"]["check"]["top1_agreement"] >= 0.875


def write_manifest(where: Path, change) -> Path:
    """A bundle directory holding the 0.1.0 manifest with CHANGE applied to it."""
    bundle = where / "b"
    bundle.mkdir(parents=True)
    doc = json.loads(FIXTURE.read_text())
    change(doc)
    (bundle / MANIFEST).write_text(json.dumps(doc))
    return bundle


def test_a_misspelt_budget_is_an_error_not_a_budget_turned_off(tmp_path):
    bundle = write_manifest(tmp_path, lambda d: d["profile"]["budgets"].update(max_p90_latncy_ms=5))
    with pytest.raises(EdgepackError, match="unreadable manifest") as raised:
        read_manifest(bundle)
    assert raised.value.hint == "rebuild the bundle"


def test_a_misspelt_fidelity_or_facts_key_is_an_error(tmp_path):
    changes = {"fidelity": lambda d: d["fidelity"].update(top1_agrement=1.0), "facts": lambda d: d["facts"].update(mirco={})}
    for name, change in changes.items():
        with pytest.raises(EdgepackError, match="unreadable manifest"):
            read_manifest(write_manifest(tmp_path / name, change))


def test_a_manifest_from_a_newer_edgepack_is_refused_with_the_versions_it_reads(tmp_path):
    bundle = write_manifest(tmp_path, lambda d: d.update(schema_version=999))
    result = runner.invoke(app, ["bench", str(bundle)])
    assert result.exit_code == 2 and "schema_version 999 is not one this edgepack reads (1 to 2)" in result.output
    assert "Traceback" not in result.output


def test_format_and_status_are_enums(tmp_path):
    for key, value in (("format", "pdf"), ("status", "banana")):
        with pytest.raises(EdgepackError, match="unreadable manifest"):
            read_manifest(write_manifest(tmp_path / key, lambda d, k=key, v=value: d.update({k: v})))
