"""Detector-shaped models at int8 for TFLite: recovery keeps int8's family, memory stays bounded,
and the build writes nothing where it is run from."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgepack.builder.pipeline import build
from tests.detectors import write_detector

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def same_speed_as_fp32(monkeypatch):
    """The host-speed comparison is not what these tests are about: both run alike here."""
    import edgepack.builder.host_latency as host_latency

    monkeypatch.setattr(host_latency, "compare_latency", lambda a, b, inputs: (1.0, 1.0))


def test_detector_whose_plain_int8_misses_the_dense_gate_recovers_within_int8s_family(isolated_user_dirs, tmp_path):
    model, data = write_detector(tmp_path, 64, n=48, outlier=3000.0, backbone="tiny")
    before = sorted(os.listdir(isolated_user_dirs))
    result = build(model, "raspberry-pi-4", data=data, out=tmp_path / "bundle")
    q = result.manifest.facts.quantization.model_dump(mode="json")
    plain = q["attempts"][0]
    assert plain["strategy"] == "plain" and not plain["passed"] and "SQNR" in plain["failure"], q["attempts"]
    assert result.passed, (result.manifest.notes, q["attempts"])
    assert result.manifest.build["precision_used"] == "int8" and q["strategy"] != "plain"
    assert result.size_bytes < 0.5 * 4 * result.manifest.source.params  # under half of float32's size
    assert sorted(os.listdir(isolated_user_dirs)) == before  # nothing written where the build ran


BOUND_MB = 2048  # TensorFlow, the converter and one batch fit; every activation of every sample does not

PEAK_SCRIPT = """
import json, sys
from pathlib import Path
from edgepack.builder.pipeline import build
result = build(Path(sys.argv[1]), "raspberry-pi-4", data=Path(sys.argv[2]), out=Path(sys.argv[3]), use_cache=False)
print(json.dumps({"peak": result.manifest.peak_rss_mb, "passed": result.passed}))
"""


def test_build_peak_stays_bounded_where_every_activation_would_not_fit(tmp_path):
    # 64 evaluation samples of a 320x320 detector: its activations (23 MB a sample in float64),
    # every sample of both models, are 2.9 GB; a build that streams holds one batch of them.
    model, data = write_detector(tmp_path, 320, n=128, backbone="tiny")
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, str(model), str(data), str(tmp_path / "bundle")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert figures["peak"] is not None and figures["peak"] < BOUND_MB, figures


def test_a_profile_whose_fallback_excludes_fp32_fails_instead_of_shipping_fp32(isolated_user_dirs, tmp_path):
    # A gate no quantized variant meets (SQNR 100 dB): with `fallback: auto` the build ends at fp32;
    # with `fallback: [fp16]` it fails, exit 1, with what it tried, and no fp32 among the attempts.
    from typer.testing import CliRunner

    from edgepack.cli.app import app
    from tests.conftest import write_target

    model, data = write_detector(tmp_path, 64, n=32, backbone="tiny")
    strict = "verify: {min_sqnr_db: 100}\n"
    auto = write_target(isolated_user_dirs, "pi4-exact", "extends: raspberry-pi-4\n" + strict)
    shipped = build(model, auto, data=data, out=tmp_path / "auto")
    assert shipped.passed and shipped.manifest.precision.value == "fp32"

    no_fp32 = write_target(isolated_user_dirs, "pi4-exact-no-fp32", "extends: raspberry-pi-4\nbuild: {fallback: [fp16]}\n" + strict)
    result = CliRunner().invoke(app, ["build", str(model), "--target", no_fp32, "--data", str(data), "--out", str(tmp_path / "strict"), "--json"])
    assert result.exit_code == 1, result.output
    manifest = json.loads((tmp_path / "strict" / "manifest.json").read_text())
    tried = [a["strategy"] for a in manifest["facts"]["quantization"]["attempts"]]
    assert manifest["status"] == "failed" and manifest["precision"] != "fp32"
    assert "fp16 (precision ladder)" in tried and not any(s.startswith("fp32") for s in tried), tried
