"""Time per operator on the device: ONNX Runtime's profiler per node and op type, TFLite's benchmark_model table,
and a plain line where a runtime gives no per-operator times."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np

from edgepack.ondevice.opprofile import benchmark_model_command, parse_benchmark_model, profile_ort_session, profile_tflite

FIXTURE = Path(__file__).parent / "fixtures" / "benchmark_model_op_profiling.txt"  # in benchmark_model's table format


def conv_model() -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 1, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv0"), helper.make_node("Relu", ["c"], ["r"], name="relu0"),
             helper.make_node("ReduceMean", ["r"], ["y"], name="mean0", keepdims=0)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 32, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_onnxruntime_profile_times_each_node_and_op_type_and_names_its_provider(tmp_path, monkeypatch):
    import onnxruntime as ort

    model = conv_model()

    def make_session(prefix):
        options = ort.SessionOptions()
        options.enable_profiling = True
        options.profile_file_prefix = prefix
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep the three nodes apart
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    found = profile_ort_session(make_session, {"x": np.ones((1, 1, 32, 32), np.float32)}, None, runs=5)
    assert found["runs"] == 5 and found["source"] == "onnxruntime-profiler"
    assert {n["name"]: n["op_type"] for n in found["nodes"]} == {"conv0": "Conv", "relu0": "Relu", "mean0": "ReduceMean"}
    assert {n["provider"] for n in found["nodes"]} == {"CPUExecutionProvider"}
    assert found["by_provider"]["CPUExecutionProvider"]["nodes"] == 3
    assert found["accelerated_fraction"] is None  # everything on the CPU: no accelerator asked of it
    assert abs(sum(n["share"] for n in found["nodes"]) - 1) < 1e-3 and all(n["ms"] > 0 for n in found["nodes"])
    assert [g["op_type"] for g in found["by_op_type"]] == [n["op_type"] for n in found["nodes"]]  # one node each, slowest first
    assert list(cwd.iterdir()) == []  # the profile file is written apart and removed: nothing in the working directory


def test_benchmark_model_table_is_read_per_node_and_op_type():
    found = parse_benchmark_model(FIXTURE.read_text())
    assert [n["op_type"] for n in found["nodes"]] == ["TfLiteXNNPackDelegate", "TfLiteXNNPackDelegate", "STRIDED_SLICE", "SHAPE"]
    assert found["by_provider"]["xnnpack"]["nodes"] == 2 and found["by_provider"]["cpu"]["nodes"] == 2
    first = found["by_op_type"][0]
    assert (first["op_type"], first["count"], first["ms"]) == ("TfLiteXNNPackDelegate", 2, 0.235) and abs(first["share"] - 0.235 / 0.24) < 1e-6
    assert abs(found["total_ms"] - 0.24) < 1e-9 and "partition is one node" in found["method"]


def test_a_tflite_model_without_benchmark_model_says_there_are_no_per_operator_times(tmp_path):
    found = profile_tflite(str(tmp_path / "model.tflite"), 2, ["xnnpack"], path_env=str(tmp_path))
    assert found["nodes"] == [] and "no per-operator times" in found["unavailable"] and "benchmark_model" in found["unavailable"]


def test_benchmark_model_on_path_is_run_with_the_bench_settings_and_read(tmp_path):
    log = tmp_path / "argv.txt"
    tool = tmp_path / "benchmark_model"
    tool.write_text(f"#!/bin/sh\necho \"$@\" > {log}\ncat {FIXTURE}\n")
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    found = profile_tflite(str(tmp_path / "model.tflite"), 2, ["xnnpack"], path_env=str(tmp_path))
    assert len(found["nodes"]) == 4 and "unavailable" not in found
    argv = log.read_text().split()
    assert "--enable_op_profiling=true" in argv and "--num_threads=2" in argv and "--use_xnnpack=true" in argv
    assert benchmark_model_command("bm", "m.tflite", None, ["gpu"])[-2:] == ["--use_xnnpack=false", "--use_gpu=true"]
    assert os.access(tool, os.X_OK)
