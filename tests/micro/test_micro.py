"""The microcontroller target: TFLite Micro int8, C source, tensor arena, flash/RAM fit, latency estimate."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from edgepack.cli.app import app
from edgepack.micro.arena import ALIGNMENT, Buffer, plan, planned_activations
from edgepack.micro.csource import c_files
from edgepack.micro.fit import fit, fit_failures, latency, micro_summary
from edgepack.micro.graph import Graph, Operator, Tensor
from edgepack.micro.ops import check_ops
from edgepack.micro.report import render_micro_summary
from edgepack.profile.store import Catalog
from tests.conftest import write_target
from tests.unavailable import unavailable

runner = CliRunner()
KB = 1024


def needs_tflite_micro():
    """Skip without the tflite-micro package, except in CI, where it is a dev dependency."""
    try:
        import tflite_micro  # noqa: F401
    except ImportError:
        unavailable("tflite-micro is not installed (a dev dependency): pip install --pre tflite-micro")


def compile_and_read_back(bundle, tmp_path) -> tuple[bytes, int]:
    """Compile the bundle's model_data.cc with the system C++ compiler into a program that writes
    the array back out; return its bytes and kTensorArenaSize."""
    cxx = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if cxx is None:
        unavailable("no C++ compiler on this machine (apt-get install -y g++)")
    main = tmp_path / "main.cc"
    main.write_text(
        '#include <cstdint>\n#include <cstdio>\n#include "model_data.h"\n'
        "int main(int, char** argv) {\n"
        "  if (reinterpret_cast<std::uintptr_t>(g_model_data) % 16 != 0) return 3;\n"
        '  std::FILE* f = std::fopen(argv[1], "wb");\n'
        "  std::fwrite(g_model_data, 1, g_model_data_len, f);\n"
        "  std::fclose(f);\n"
        '  std::printf("%u\\n", kTensorArenaSize);\n'
        "  return 0;\n}\n"
    )
    exe = tmp_path / "read_model"
    compiled = subprocess.run(
        [cxx, "-std=c++11", "-Wall", "-Wextra", "-Werror", "-I", str(bundle), str(main), str(bundle / "model_data.cc"), "-o", str(exe)],
        capture_output=True, text=True,
    )
    assert compiled.returncode == 0, compiled.stderr
    out = subprocess.run([str(exe), str(tmp_path / "back.tflite")], check=True, capture_output=True, text=True)
    return (tmp_path / "back.tflite").read_bytes(), int(out.stdout)


def chain(sizes: list[int], ops: list[str] | None = None) -> Graph:
    """A graph input -> op -> op -> ... with int8 activations of the given sizes in bytes."""
    tensors = [Tensor(i, f"model_1/layer_{i}_1/out", (1, n), "INT8", constant=False) for i, n in enumerate(sizes)]
    operators = [
        Operator(i, (ops or ["RELU"] * len(sizes))[i], 1, inputs=(i,), outputs=(i + 1,)) for i in range(len(sizes) - 1)
    ]
    return Graph(tensors, operators, inputs=[0], outputs=[len(sizes) - 1])


# --- the arena planner, on graphs built by hand --------------------------------------------------


def test_planner_needs_only_the_largest_pair_of_neighbours_in_a_chain():
    # in -> a -> b -> c -> out: each op needs its input and output; the rest reuse that space.
    g = chain([64, 1024, 2048, 512, 16])
    assert planned_activations(g) == 1024 + 2048


def test_planner_aligns_every_buffer_to_16_bytes_and_skips_constants():
    g = chain([10, 10])
    g.tensors.append(Tensor(2, "weights", (1000,), "INT8", constant=True))
    assert planned_activations(g) == 2 * ALIGNMENT


def test_planner_fills_the_gap_left_by_a_dead_buffer():
    # The 100-byte buffer comes to life after the 1000-byte one has died, and takes its place.
    buffers = [Buffer(1000, 0, 1), Buffer(2000, 1, 2), Buffer(100, 2, 3)]
    head, offsets = plan(buffers)
    assert head == 3000 and offsets == {1: 0, 0: 2000, 2: 2000}


def test_scratch_space_of_transpose_convolution_counts_during_its_op():
    g = chain([64, 256], ops=["TRANSPOSE_CONV"])
    assert planned_activations(g) == 64 + 256 + 4 * 256


# --- fit, latency, ops, C source: no TensorFlow ---------------------------------------------------


def test_fit_is_model_plus_runtime_code_in_flash_and_arena_plus_reserved_in_ram():
    profile = Catalog().load("cortex-m4").profile
    result = fit(model_bytes=500 * KB, arena_bytes=100 * KB, profile=profile)
    assert result["flash"]["needed"] == (500 + profile.micro.runtime_code_kb) * KB
    assert result["flash"]["available"] == 1024 * KB and result["ram"]["available"] == 256 * KB
    assert result["ram"]["needed"] == (100 + profile.micro.reserved_ram_kb) * KB
    assert result["fits"] and fit_failures(result, "cortex-m4", {}) == []


def test_a_model_too_big_fails_with_needed_available_and_what_would_help():
    profile = Catalog().load("cortex-m4").profile
    result = fit(model_bytes=2000 * KB, arena_bytes=300 * KB, profile=profile)
    largest = {"weights": {"layer": "'wide' (Dense)", "bytes": 1900 * KB}, "activation": {"layer": "'conv' (Conv2D)", "bytes": 200 * KB}}
    flash, ram = fit_failures(result, "cortex-m4", largest)
    assert not result["fits"]
    assert "does not fit cortex-m4: flash needs 2096.0 KB (model 2000.0 KB + runtime code 96.0 KB), has 1024 KB" in flash
    assert "over by 1072.0 KB" in flash and "channel pruning" in flash and "'wide' (Dense)" in flash
    assert "RAM needs 332.0 KB" in ram and "a smaller input" in ram and "'conv' (Conv2D)" in ram


def test_latency_estimate_is_macs_times_cycles_per_mac_over_the_clock():
    profile = Catalog().load("cortex-m7").profile
    t = [
        Tensor(0, "in", (1, 8, 8, 1), "INT8", False),
        Tensor(1, "k", (16, 3, 3, 1), "INT8", True),
        Tensor(2, "b", (16,), "INT32", True),
        Tensor(3, "out", (1, 8, 8, 16), "INT8", False),
    ]
    g = Graph(t, [Operator(0, "CONV_2D", 3, (0, 1, 2), (3,))], [0], [3])
    lat = latency(g, profile)
    assert lat["macs"] == 8 * 8 * 16 * 9
    assert lat["estimate_ms"] == pytest.approx(lat["macs"] * 1.0 / 480e3)
    assert "estimate, not measured" in lat["how"]


def test_op_check_names_the_op_its_version_and_the_keras_layer():
    class Activation:
        name = "smooth"

    class Model:
        name = "functional"
        layers = [Activation()]

    g = chain([64, 64], ops=["GELU"])
    g.tensors[1] = Tensor(1, "functional_1/smooth_1/Gelu/mul_2;functional_1/smooth_1/Gelu/Erfc", (1, 64), "INT8", False)
    (missing,) = check_ops(g, Model())
    assert missing.op == "GELU" and missing.layer == "'smooth' (Activation)"
    assert "no kernel" in missing.describe()
    # A hybrid FULLY_CONNECTED (version 3) is in the op set, but not at that version.
    hybrid_graph = chain([64, 64], ops=["FULLY_CONNECTED"])
    hybrid_graph.operators[0] = Operator(0, "FULLY_CONNECTED", 3, (0,), (1,))
    (hybrid,) = check_ops(hybrid_graph)
    assert hybrid.version == 3 and "hybrid" in hybrid.reason
    assert check_ops(chain([64, 64], ops=["CONV_2D"])) == []


def test_c_source_compiles_and_holds_the_model_bytes_16_byte_aligned(tmp_path):
    from edgepack.bundle import TensorSpec

    content = bytes(np.random.default_rng(0).integers(0, 256, 1001, dtype=np.uint8))
    facts = {
        "arena": {"bytes": 4096, "activations_bytes": 3000, "persistent_bytes": 1000, "margin_bytes": 96, "method": "estimated"},
        "fit": {"flash": {"needed": 1, "available": 2}, "ram": {"needed": 3, "available": 4}},
        "latency": {"estimate_ms": 1.5},
    }
    spec = TensorSpec(name="image", shape=[1, 8, 8, 1], dtype="int8", scale=0.0039, zero_point=-128)
    for name, text in c_files(content, [spec], [spec.model_copy(update={"name": "scores"})], facts, "cortex-m7").items():
        (tmp_path / name).write_bytes(text)
    header = (tmp_path / "model_data.h").read_text()
    assert "input 'image': int8 [1x8x8x1], scale 0.0039, zero point -128" in header
    assert "output 'scores'" in header and "Tensor arena: 4096 bytes" in header
    back, arena = compile_and_read_back(tmp_path, tmp_path)
    assert back == content and arena == 4096


# --- refused up front: what TFLite Micro cannot run -----------------------------------------------


@pytest.mark.parametrize(
    "build, reason",
    [
        ("{precision: fp16}", "format tflite-micro runs full-integer models only (got precision fp16)"),
        ("{precision: dynamic-int8}", "format tflite-micro runs full-integer models only (got precision dynamic-int8)"),
        ("{io_dtype: float32}", "format tflite-micro needs integer input and output"),
        ("{prune: {sparsity: 0.5}}", "format tflite-micro cannot run sparse models"),
    ],
)
def test_build_refuses_what_tflite_micro_cannot_run(isolated_user_dirs, build, reason):
    name = write_target(isolated_user_dirs, "m7", f"extends: cortex-m7\nbuild: {build}\n")
    (isolated_user_dirs / "m.keras").write_bytes(b"not loaded: the profile is refused first")
    result = runner.invoke(app, ["build", "m.keras", "--target", name, "--synthetic-calibration"])
    assert result.exit_code == 2, result.output
    assert reason in result.output and "Traceback" not in result.output
    assert not (isolated_user_dirs / "build").exists()


# --- real builds of small models trained on digits ------------------------------------------------


@pytest.fixture(scope="module")
def m7_build(tmp_path_factory, digits_files):
    """The digits CNN built for cortex-m7 through the CLI: (exit code, output, bundle)."""
    model, data = digits_files
    root = tmp_path_factory.mktemp("m7")
    out = root / "bundle"
    env = {"XDG_CACHE_HOME": str(root / "cache"), "XDG_CONFIG_HOME": str(root / "config")}
    result = runner.invoke(app, ["build", str(model), "--target", "cortex-m7", "--data", str(data), "--out", str(out)], env=env)
    return result.exit_code, result.output, out


@pytest.mark.slow
def test_digits_cnn_fits_cortex_m7_and_its_c_source_compiles_to_the_same_bytes(m7_build, tmp_path):
    code, output, bundle = m7_build
    assert code == 0, output
    assert "fits" in output and "flash" in output and "RAM" in output and "tensor arena" in output
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert {f["path"] for f in manifest["files"]} >= {"model.tflite", "model_data.cc", "model_data.h", "reference.npz"}
    micro = manifest["facts"]["micro"]
    assert micro["fit"]["fits"] and micro["latency"]["estimate_ms"] > 0
    assert manifest["inputs"][0]["dtype"] == "int8" and manifest["outputs"][0]["dtype"] == "int8"
    assert manifest["fidelity"]["top1_agreement"] >= 0.97
    header = (bundle / "model_data.h").read_text()
    s = manifest["inputs"][0]
    assert f"scale {s['scale']:.9g}, zero point {s['zero_point']}" in header
    back, arena = compile_and_read_back(bundle, tmp_path)
    assert back == (bundle / "model.tflite").read_bytes()
    assert arena == micro["arena"]["bytes"]


@pytest.mark.slow
def test_micro_summary_gives_the_static_figures_marked_not_measured_on_the_device(m7_build):
    _, _, bundle = m7_build
    summary = micro_summary(bundle)
    assert summary["measured_on_device"] is False and summary["fits"] is True
    assert summary["flash"]["available"] == 2048 * KB and summary["ram"]["available"] == 1024 * KB
    assert summary["arena"]["method"] in ("measured", "estimated") and summary["latency"]["estimate_ms"] > 0
    console = Console(record=True, width=200)
    console.print(render_micro_summary(summary))
    text = console.export_text()
    assert "not measured on the device" in text and "tensor arena" in text


@pytest.mark.slow
def test_with_tflite_micro_the_arena_is_measured_and_outputs_checked_in_its_interpreter(m7_build):
    needs_tflite_micro()
    _, _, bundle = m7_build
    micro = json.loads((bundle / "manifest.json").read_text())["facts"]["micro"]
    assert micro["arena"]["method"] == "measured" and micro["host_check"]["runtime"].startswith("tflite-micro")
    assert micro_summary(bundle)["host_check"]["top1_agreement"] >= 0.97


@pytest.mark.slow
def test_arena_estimate_is_within_5_percent_of_tflite_micros_own_figure(digits_files):
    needs_tflite_micro()
    from edgepack.builder.convert.tflite import convert_tflite
    from edgepack.micro.arena import estimate_arena
    from edgepack.micro.graph import read_graph
    from edgepack.micro.host import TflmRunner
    from edgepack.model.data import Dataset
    from edgepack.model.source import load_model
    from edgepack.profile.schema import IoDtype, Precision

    model, data = digits_files
    x = np.load(data)["x"][:100]
    content = convert_tflite(load_model(model), Precision.int8, IoDtype.int8, Dataset([x]))
    graph = read_graph(content)
    estimate = estimate_arena(graph)
    measured = TflmRunner(content, 1 << 20, graph).arena()
    assert abs(estimate.activations_bytes - measured.activations_bytes) <= 0.05 * measured.activations_bytes
    # The whole estimate (persistent part and margin included) errs on the safe side.
    assert measured.bytes <= estimate.bytes <= 1.5 * measured.bytes


@pytest.mark.slow
def test_without_tflite_micro_the_arena_is_estimated_and_said_so(isolated_user_dirs, digits_files, monkeypatch):
    import edgepack.micro.host

    monkeypatch.setattr(edgepack.micro.host, "tflm_version", lambda: None)
    model, data = digits_files
    result = runner.invoke(app, ["build", str(model), "--target", "cortex-m7", "--data", str(data)])
    assert result.exit_code == 0, result.output
    micro = json.loads((isolated_user_dirs / "build" / "cnn-cortex-m7" / "manifest.json").read_text())["facts"]["micro"]
    assert micro["arena"]["method"] == "estimated" and micro["host_check"] is None
    assert "estimated: TFLite Micro's greedy memory plan" in result.output


@pytest.mark.slow
def test_a_model_too_big_for_cortex_m4_is_refused_with_the_table(isolated_user_dirs, tmp_path, digits):
    import keras

    x, y = digits
    keras.utils.set_random_seed(0)
    m = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(2048, activation="relu", name="first"),
         keras.layers.Dense(1024, activation="relu", name="wide"), keras.layers.Dense(10, activation="softmax")]
    )
    m.compile("adam", "sparse_categorical_crossentropy")
    m.fit(x[:1200], y[:1200], epochs=1, verbose=0)
    m.save(tmp_path / "wide.keras")
    np.savez(tmp_path / "d.npz", x=x[1200:1500], y=y[1200:1500])
    write_target(isolated_user_dirs, "m4", "extends: cortex-m4\nbudgets: {max_accuracy_drop: 0.2}\n")
    result = runner.invoke(app, ["build", str(tmp_path / "wide.keras"), "--target", "m4", "--data", str(tmp_path / "d.npz")])
    assert result.exit_code == 1, result.output
    out = result.output
    assert "needed" in out and "available" in out and "over by" in out
    assert "does not fit m4: flash needs" in out and "has 1024 KB" in out
    assert "channel pruning" in out and "'wide' (Dense)" in out
    manifest = json.loads((isolated_user_dirs / "build" / "wide-m4" / "manifest.json").read_text())
    fit_ = manifest["facts"]["micro"]["fit"]
    assert manifest["status"] == "failed" and not fit_["flash"]["fits"] and fit_["ram"]["fits"]
    assert fit_["flash"]["needed"] > 2 * 1024 * KB


@pytest.mark.slow
def test_an_op_tflite_micro_lacks_is_reported_by_name_with_its_layer(isolated_user_dirs, tmp_path, digits):
    import keras

    x, y = digits
    m = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(32), keras.layers.Activation("gelu", name="smooth"),
         keras.layers.Dense(10, activation="softmax")]
    )
    m.save(tmp_path / "gelu.keras")
    np.savez(tmp_path / "d.npz", x=x[:200], y=y[:200])
    result = runner.invoke(app, ["build", str(tmp_path / "gelu.keras"), "--target", "cortex-m7", "--data", str(tmp_path / "d.npz")])
    assert result.exit_code == 2, result.output
    assert "runs TFLite Micro, which cannot run GELU" in result.output
    assert "GELU (version" in result.output and "from layer 'smooth' (Activation)" in result.output
    assert "relu" in result.output  # what to use instead
    assert not (isolated_user_dirs / "build").exists()


@pytest.mark.slow
def test_bench_of_a_micro_bundle_prints_static_figures_not_a_measurement(m7_build):
    _, _, bundle = m7_build
    result = runner.invoke(app, ["bench", str(bundle)])
    assert result.exit_code == 0, result.output
    assert "not measured on the device" in result.output and "flash" in result.output and "tensor arena" in result.output
    data = json.loads(runner.invoke(app, ["bench", str(bundle), "--json"]).stdout)
    assert data["measured_on_device"] is False and data["fits"] is True
    pushed = runner.invoke(app, ["bench", str(bundle), "--device", "local"])
    assert pushed.exit_code == 2 and "runs inside firmware" in pushed.output


@pytest.mark.slow
def test_deploy_to_a_microcontroller_target_shows_its_static_figures(isolated_user_dirs, digits_files):
    model, data = digits_files
    result = runner.invoke(app, ["deploy", str(model), "-t", "cortex-m7", "--data", str(data)])
    assert result.exit_code == 0, result.output
    assert "nothing is measured" in result.output and "flash" in result.output
