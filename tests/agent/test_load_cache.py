"""Where load time goes, the load-optimised form beside the plain load, and time to first answer: the agent as the host runs it."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edgepack.agent.protocol import AgentReport, parse_report
from edgepack.bundle import TensorSpec
from tests.agent.test_agent import AGENT, FAST, run_agent
from tests.agent.test_agent_onnx import agent_module

pytestmark = pytest.mark.slow


def on_device(bundle: Path, root: Path) -> Path:
    """A copy of BUNDLE in a workdir of its own, ROOT/device/bundle, as the host pushes it."""
    target = root / "device" / "bundle"
    shutil.copytree(bundle, target)
    return target


def loader(bundle: Path):
    """The bundle's own edgepack_runtime.py, imported fresh (its in-process model cache starts empty)."""
    spec = importlib.util.spec_from_file_location(f"edgepack_runtime_{abs(hash(str(bundle)))}", bundle / "edgepack_runtime.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def onnx_on_device(tmp_path, onnx_bundle, bundle_factory) -> Path:
    """The softmax-regression bundle with its tensors in the manifest, in a workdir of its own."""
    return bundle_factory(
        tmp_path / "device" / "bundle", "model.onnx", (onnx_bundle / "model.onnx").read_bytes(), dict(np.load(onnx_bundle / "reference.npz")),
        [TensorSpec(name="x", shape=[None, 64], dtype="float32")], [TensorSpec(name="y", shape=[None, 10], dtype="float32")],
    )


def entry_files(report: AgentReport) -> list[Path]:
    entry = Path(report.load.optimized.path)
    return sorted(p for p in entry.iterdir() if p.name != "meta.json")


def test_onnx_load_phases_and_its_optimised_graph_made_once_checked_and_reused(tmp_path, onnx_on_device):
    bundle = onnx_on_device

    proc, first = run_agent(bundle)

    assert proc.returncode == 0, first.errors
    load = first.load
    assert list(load.phases_ms) == ["model_loading", "session_initialization", "session_other", "first_inference"]
    assert all(ms >= 0 for ms in load.phases_ms.values()) and load.phases_ms["model_loading"] > 0
    assert load.import_ms > 0 and first.memory.load_mb is not None
    opt = load.optimized
    assert opt.form in ("onnx-optimized", "ort-format") and opt.created is True
    assert set(opt.alternatives_warm_ms) == {"onnx-optimized", "ort-format"} - {opt.form}
    assert len(opt.cold_ms) == 2 and len(opt.warm_ms) == 2 and all(ms > 0 for ms in opt.cold_ms + opt.warm_ms)
    assert opt.check.max_abs_error < 1e-5 and opt.check.top1_agreement == 1.0 and opt.check.n_samples == 32
    assert Path(opt.path).parent == bundle.parent / "load-cache"  # in the device workdir
    meta = json.loads((Path(opt.path) / "meta.json").read_text())
    assert meta["use"] is opt.used_by_loader and meta["form"] == opt.form and meta["check"]["n_samples"] == 32
    assert any(f"the loader (edgepack_runtime.py) {'uses' if opt.used_by_loader else 'does not use'} the {opt.form} form" in n
               for n in first.notes)
    runs = {(r.form, r.background): r.ms for r in load.first_answer.runs}
    assert set(runs) == {("plain", False), ("plain", True), (opt.form, False), (opt.form, True)}
    assert all(len(ms) == 2 and min(ms) > 0 for ms in runs.values()) and load.first_answer.startup_work_ms == 200

    proc, second = run_agent(bundle)

    assert proc.returncode == 0, second.errors
    assert second.load.optimized.created is False and second.load.optimized.form == opt.form
    assert not any("made again" in n for n in second.notes)

    er = loader(bundle)
    x = np.load(bundle / "reference.npz")["in_0"]
    plain = er.load(bundle, form="plain").predict(x)[0]
    fast = er.load(bundle, form="optimized")
    assert fast.form == opt.form and np.allclose(fast.predict(x)[0], plain, atol=1e-6)
    assert er.load(bundle, cache=False).form == "plain"
    assert er.load(bundle).form == (opt.form if second.load.optimized.used_by_loader else "plain")  # as the last bench found


def test_a_corrupt_or_stale_load_cache_is_detected_rebuilt_and_never_used(tmp_path, onnx_on_device):
    bundle = onnx_on_device
    proc, first = run_agent(bundle)
    assert proc.returncode == 0, first.errors
    entry = Path(first.load.optimized.path)
    target = entry_files(first)[-1]

    # The same size and the same time stamp, different bytes: only the agent's sha256 sees it.
    st = target.stat()
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    stale = entry.parent / (entry.name.split("-")[0] + "-onnxruntime-0.0.1")
    stale.mkdir()
    (stale / "meta.json").write_text("{}")

    proc, second = run_agent(bundle)

    assert proc.returncode == 0, second.errors
    assert any(f"{entry} is corrupt ({target.name} does not match its sha256): made again, not used" in n for n in second.notes)
    assert second.load.optimized.created is True and second.load.optimized.check.max_abs_error < 1e-5
    assert not stale.exists() and any("removed the load cache entry" in n and "another onnxruntime version" in n for n in second.notes)

    # Changed after the bench (a new time stamp): the loader loads plain and says why, without hashing anything.
    (entry / "meta.json").write_text((entry / "meta.json").read_text().replace('"use": false', '"use": true'))
    target = entry_files(second)[-1]
    target.write_bytes(target.read_bytes())
    model = loader(bundle).load(bundle)
    assert model.form == "plain" and any("changed after the bench checked it" in n for n in model.notes)

    (entry / "meta.json").write_text("{not json")
    proc, third = run_agent(bundle)
    assert proc.returncode == 0 and any("has an unreadable meta.json" in n for n in third.notes)
    assert third.load.optimized.created is True


def test_an_unwritable_load_cache_benches_plain_with_a_note(tmp_path, onnx_on_device):
    bundle = onnx_on_device
    (tmp_path / "a-file").write_text("")

    proc, report = run_agent(bundle, "--load-cache-dir", str(tmp_path / "a-file" / "cache"))

    assert proc.returncode == 0, report.errors
    assert report.load.optimized is None and report.load.warm_ms
    assert any(f"load cache {tmp_path / 'a-file' / 'cache'} is not writable" in n and "plain load only" in n for n in report.notes)
    assert [(r.form, r.background) for r in report.load.first_answer.runs] == [("plain", False), ("plain", True)]


def test_load_cache_off_makes_nothing(tmp_path, onnx_on_device):
    bundle = onnx_on_device

    proc, report = run_agent(bundle, "--load-cache", "off")

    assert proc.returncode == 0 and report.load.optimized is None
    assert any("load_cache is off" in n for n in report.notes)
    assert not (bundle.parent / "load-cache").exists()


def test_bad_load_cache_value_is_one_clear_error(onnx_on_device):
    proc, report = run_agent(onnx_on_device, "--load-cache", "sometimes")
    assert proc.returncode == 1 and not report.ok
    assert len(report.errors) == 1 and report.errors[0].startswith("bad arguments: argument --load-cache: invalid choice: 'sometimes'")
    assert "'auto', 'off'" in report.errors[0]  # the choices (their quoting varies with the Python version)


def test_the_agent_leaves_nothing_outside_its_workdir(tmp_path, onnx_on_device):
    bundle = onnx_on_device
    before = sorted(p.name for p in bundle.iterdir())
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = dict(os.environ, TMPDIR=str(scratch))
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as on a device: Python writes __pycache__ where it may

    proc = subprocess.run([sys.executable, str(AGENT), str(bundle), *FAST], capture_output=True, text=True, timeout=300, env=env)

    assert parse_report(proc.stdout).ok
    # onnxruntime itself drops a session file in the temporary directory on import: that is all there may be.
    its_own = tmp_path / "tmp-runtime"
    its_own.mkdir()
    subprocess.run([sys.executable, "-c", "import onnxruntime"], check=True, timeout=120, env=dict(env, TMPDIR=str(its_own)))
    assert {p.name for p in scratch.iterdir()} <= {p.name for p in its_own.iterdir()}
    assert sorted(p.name for p in bundle.parent.iterdir()) == ["bundle", "load-cache"]
    assert sorted(p.name for p in bundle.iterdir()) == before
    assert [p.name for p in (bundle.parent / "load-cache").iterdir() if p.name.startswith(".")] == []  # no staging left


def test_tflite_xnnpack_weight_cache_is_measured_beside_the_plain_load(tmp_path, tflite_bundles):
    bundle = on_device(tflite_bundles["int8"], tmp_path)

    proc, report = run_agent(bundle, "--cold-loads", "1")

    assert proc.returncode == 0, report.errors
    load = report.load
    assert list(load.phases_ms) == ["read_file", "build_interpreter", "allocate_tensors", "first_inference"]
    # The phases are medians each; their sum is the warm load's (a single warm load here).
    assert sum(load.phases_ms[k] for k in ("read_file", "build_interpreter", "allocate_tensors")) == pytest.approx(load.warm_ms[0], rel=0.05, abs=0.3)
    opt = load.optimized
    assert opt.form == "xnnpack-weight-cache" and len(opt.warm_ms) == 1 and len(opt.cold_ms) == 1
    assert list(opt.phases_ms) == ["create_compiled_model", "create_buffers", "first_inference"]
    assert opt.check.top1_agreement == report.check.top1_agreement and opt.check.max_abs_error <= report.check.max_abs_error + 1e-5
    assert opt.import_ms > 0 and isinstance(opt.used_by_loader, bool)
    assert (Path(opt.path) / "model.xnnpack-cache").stat().st_size > 0
    assert any("the loader (edgepack_runtime.py)" in n and "xnnpack-weight-cache" in n and "ms plain" in n for n in report.notes)


def test_a_tflite_runtime_without_the_weight_cache_says_so():
    agent = agent_module()
    old = SimpleNamespace(name="tflite_runtime", version="2.14.0", requested=["xnnpack"])
    gpu = SimpleNamespace(name="ai_edge_litert", version="2.3.0", requested=["gpu"])
    assert agent.LiteRtCompiled.unavailable(old) == "tflite_runtime 2.14.0 has no XNNPACK weight cache (ai_edge_litert's CompiledModel has)"
    assert agent.LiteRtCompiled.unavailable(gpu) == "the XNNPACK weight cache does not apply with the gpu delegate"
    notes = []
    assert agent.possible_forms("tflite", old, notes) == [] and notes == ["no load-optimised TFLite form: " + agent.LiteRtCompiled.unavailable(old)]


def test_reports_from_before_load_detail_still_read():
    doc = {
        "protocol": 1, "ok": True,
        "runtime": {"name": "tflite_runtime", "version": "2.14.0"},
        "load": {"cold_ms": [12.0], "warm_ms": [3.0], "in_process_ms": 2.0, "cold_evicted": True, "method": "old"},
        "latency_ms": {"samples": [1.0], "p50": 1.0, "p90": 1.0, "p99": 1.0, "mean": 1.0, "std": 0.0, "min": 1.0, "max": 1.0,
                       "warmup": 0, "runs": 1},
        "memory": {"baseline_rss_mb": 50.0, "peak_rss_mb": 60.0, "delta_mb": 10.0, "method": "old"},
    }
    report = parse_report(json.dumps(doc))
    assert report.load.phases_ms is None and report.load.optimized is None and report.load.first_answer is None
    assert report.memory.load_mb is None and report.memory.check_peak_rss_mb is None


def recorded_mtime_ns(cache: Path) -> int:
    meta = json.loads((cache.parent / "meta.json").read_text())
    return next(f["mtime_ns"] for f in meta["files"] if f["path"] == cache.name)


def test_the_loader_never_writes_through_the_weight_cache(tmp_path, tflite_bundles):
    bundle = on_device(tflite_bundles["int8"], tmp_path)
    proc, report = run_agent(bundle, "--cold-loads", "1")
    assert proc.returncode == 0, report.errors
    cache = Path(report.load.optimized.path) / "model.xnnpack-cache"
    size, mtime_ns = cache.stat().st_size, recorded_mtime_ns(cache)
    ref = np.load(bundle / "reference.npz")
    er = loader(bundle)

    # A link to a user's file of the same size and the recorded time: refused, the file untouched.
    precious = tmp_path / "precious.bin"
    precious.write_bytes(b"\x07" * size)
    os.utime(precious, ns=(mtime_ns, mtime_ns))
    cache.unlink()
    cache.symlink_to(precious)
    with pytest.raises(er.LoadError, match="symbolic link"):
        er.load(bundle, form="optimized")
    assert precious.read_bytes() == b"\x07" * size

    # A corrupted regular file with the recorded size and time: the load answers, the file stays as it is.
    cache.unlink()
    cache.write_bytes(b"\x07" * size)
    os.utime(cache, ns=(mtime_ns, mtime_ns))
    model = er.load(bundle, form="optimized")
    top1 = np.argmax(model.predict(ref["in_0"])[0], -1) == np.argmax(ref["out_0"], -1)
    assert model.form == "xnnpack-weight-cache" and top1.mean() > 0.9
    assert cache.read_bytes() == b"\x07" * size and cache.stat().st_mtime_ns == mtime_ns


def test_a_load_cache_that_is_a_symbolic_link_is_refused_and_nothing_deleted(tmp_path, onnx_on_device):
    bundle = onnx_on_device
    sha = next(f["sha256"] for f in json.loads((bundle / "manifest.json").read_text())["files"] if f["path"] == "model.onnx")
    folder = tmp_path / "my-folder"  # a user's folder, with what looks like a stale entry of this model
    (folder / f"{sha[:32]}-onnxruntime-0.0.1").mkdir(parents=True)
    (folder / f"{sha[:32]}-onnxruntime-0.0.1" / "thesis.txt").write_text("years of work")
    (bundle.parent / "load-cache").symlink_to(folder)

    proc, report = run_agent(bundle)

    assert proc.returncode == 1 and not report.ok
    assert any("load cache" in e and "symbolic link" in e for e in report.errors)
    assert (folder / f"{sha[:32]}-onnxruntime-0.0.1" / "thesis.txt").read_text() == "years of work"
    assert sorted(p.name for p in folder.iterdir()) == [f"{sha[:32]}-onnxruntime-0.0.1"]


def test_time_to_first_answer_loads_with_the_bench_providers_not_the_profiles(onnx_on_device):
    import onnxruntime

    bundle = onnx_on_device
    others = [p for p in onnxruntime.get_available_providers() if p != "CPUExecutionProvider"]
    assert others, "this onnxruntime has no provider besides the CPU's"
    doc = json.loads((bundle / "manifest.json").read_text())
    doc["profile"]["runtime"]["providers"] = others + ["CPUExecutionProvider"]  # the profile's, not what the bench runs
    (bundle / "manifest.json").write_text(json.dumps(doc))

    proc, report = run_agent(bundle, "--providers", "CPUExecutionProvider")

    assert proc.returncode == 0, report.errors
    opt = report.load.optimized
    assert opt is not None and report.load.first_answer is not None, report.notes
    assert {(r.form, r.background) for r in report.load.first_answer.runs} == {
        ("plain", False), ("plain", True), (opt.form, False), (opt.form, True)}


def test_the_loader_takes_the_bench_check_of_the_artifact_until_the_file_is_written_again(onnx_on_device):
    bundle = onnx_on_device
    proc, report = run_agent(bundle)
    assert proc.returncode == 0, report.errors
    sha = next(f["sha256"] for f in json.loads((bundle / "manifest.json").read_text())["files"] if f["path"] == "model.onnx")
    assert (bundle.parent / "load-cache" / f"verified-{sha[:32]}.json").is_file()
    er = loader(bundle)
    hashed, real = [], er.sha256_file
    er.sha256_file = lambda path: hashed.append(path) or real(path)

    er.load(bundle, cache=False)
    assert hashed == []  # the bench checked this very file: no hashing at the app's start

    model = bundle / "model.onnx"
    st = model.stat()
    model.write_bytes(model.read_bytes())  # written again, its size and modification time put back
    os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns))
    loaded = er.load(bundle, cache=False)
    assert len(hashed) == 1 and loaded.phases_ms["check_artifact"] > 0  # the change time moved: hashed again
