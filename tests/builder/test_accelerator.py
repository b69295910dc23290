"""What the accelerator will run, at build time: the ops it takes and refuses, and the budget on them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from edgepack.builder.accelerator import (
    Coverage,
    accelerators,
    budget_failures,
    onnx_coverage,
    parse_analyzer,
    tflite_gpu_coverage,
)
from edgepack.cli.app import app
from edgepack.profile.schema import Budgets
from edgepack.profile.store import Catalog
from tests.conftest import write_target

# The analyzer's text as tensorflow/lite/python/analyzer_wrapper/model_analyzer.cc writes it when its
# GPU check refuses ops: the warning follows the op it is about, and a summary closes the subgraph.
FLAGGED = """=== TFLite ModelAnalyzer ===

Subgraph#0 main(T#0) -> [T#5]
  Op#0 CONV_2D(T#0, T#1, T#2) -> [T#3]
  Op#1 TOPK_V2(T#3, T#4[3]) -> [T#5, T#6]
GPU COMPATIBILITY WARNING: Not supported op TOPK_V2
  Op#2 SOFTMAX(T#5) -> [T#7]

GPU COMPATIBILITY WARNING: Subgraph#0 has GPU delegate compatibility issues at nodes 1 with TFLite runtime version 2.21.0
"""


def test_analyzer_text_names_each_op_and_the_ones_the_gpu_check_flags():
    ops, flagged = parse_analyzer(FLAGGED)
    assert [name for _, _, name in ops] == ["CONV_2D", "TOPK_V2", "SOFTMAX"]
    assert flagged == {(0, 1): "Not supported op TOPK_V2"}
    coverage = tflite_gpu_coverage(FLAGGED)
    assert (coverage.total, coverage.accelerated, coverage.refused) == (3, 2, {"TOPK_V2": 1})
    assert coverage.reasons["TOPK_V2"] == "Not supported op TOPK_V2"


def test_ops_outside_the_gpu_delegates_table_are_refused_even_where_the_analyzer_passes_them():
    text = "Subgraph#0 main(T#0) -> [T#2]\n  Op#0 RELU(T#0) -> [T#1]\n  Op#1 FlexMatrixDeterminant(T#1) -> [T#2]\n"
    coverage = tflite_gpu_coverage(text)
    assert coverage.refused == {"FlexMatrixDeterminant": 1} and coverage.fraction == 0.5 and coverage.estimate


def test_only_delegates_and_providers_off_the_cpu_are_accelerators():
    catalog = Catalog()
    assert accelerators(catalog.load("phone").profile) == ["gpu"]
    assert accelerators(catalog.load("raspberry-pi-4").profile) == []
    assert accelerators(catalog.load("jetson").profile) == ["TensorrtExecutionProvider", "CUDAExecutionProvider"]
    assert accelerators(catalog.load("raspberry-pi-5-onnx").profile) == []


def shape_graph_model() -> bytes:
    """Conv -> Shape -> Gather -> Concat -> Reshape: the Reshape's shape is computed from the Conv's output."""
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((2, 1, 3, 3), np.float32), "w")
    idx = numpy_helper.from_array(np.array([0], np.int64), "idx")
    minus1 = numpy_helper.from_array(np.array([-1], np.int64), "minus1")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"]),
        helper.make_node("Shape", ["c"], ["s"]),
        helper.make_node("Gather", ["s", "idx"], ["batch"]),
        helper.make_node("Concat", ["batch", "minus1"], ["shape"], axis=0),
        helper.make_node("Reshape", ["c", "shape"], ["flat"]),
        helper.make_node("Relu", ["flat"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w, idx, minus1],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_cuda_estimate_puts_shape_computations_on_the_cpu_and_keeps_the_math_on_the_gpu():
    coverage = onnx_coverage(shape_graph_model(), "CUDAExecutionProvider")
    assert coverage.refused == {"Shape": 1, "Gather": 1, "Concat": 1}
    assert (coverage.total, coverage.accelerated) == (6, 3)
    assert "shape" in coverage.reasons["Gather"]


def test_tensorrt_partition_is_left_to_the_device_and_never_judged():
    coverage = onnx_coverage(shape_graph_model(), "TensorrtExecutionProvider")
    assert coverage.fraction is None and coverage.total == 6
    assert budget_failures([coverage], Budgets(min_accelerated_fraction=0.99)) == []


def test_budget_failure_names_the_refused_ops():
    coverage = Coverage("gpu", "table", True, 10, 7, {"TOPK_V2": 2, "SHAPE": 1}, {"TOPK_V2": "Not supported op TOPK_V2", "SHAPE": "not among"})
    failures = budget_failures([coverage], Budgets(min_accelerated_fraction=0.9))
    assert len(failures) == 1 and "70%" in failures[0] and "TOPK_V2 x2" in failures[0] and "SHAPE" in failures[0]
    assert budget_failures([coverage], Budgets(min_accelerated_fraction=0.7)) == []
    assert budget_failures([coverage], Budgets()) == []


@pytest.mark.slow
def test_a_gpu_build_under_the_accelerated_budget_fails_naming_the_refused_ops(isolated_user_dirs, digits_files):
    model, data = digits_files
    # The digits CNN's Flatten keeps a dynamic batch: SHAPE / STRIDED_SLICE / PACK compute it.
    write_target(isolated_user_dirs, "gpu-strict", "extends: phone\nbuild: {precision: fp32}\nbudgets: {min_accelerated_fraction: 1.0}\n")
    write_target(isolated_user_dirs, "gpu-loose", "extends: phone\nbuild: {precision: fp32}\nbudgets: {min_accelerated_fraction: 0.1}\n")
    strict = CliRunner().invoke(app, ["build", str(model), "--target", "gpu-strict", "--data", str(data), "--out", "strict", "--no-cache"])
    loose = CliRunner().invoke(app, ["build", str(model), "--target", "gpu-loose", "--data", str(data), "--out", "loose", "--no-cache"])
    assert loose.exit_code == 0, loose.output
    facts = json.loads((isolated_user_dirs / "loose" / "manifest.json").read_text())["facts"]["accelerator"]
    assert facts[0]["accelerator"] == "gpu" and facts[0]["refused"] == {"SHAPE": 1}
    assert facts[0]["accelerated"] == facts[0]["total"] - 1 and 0 < facts[0]["fraction"] < 1
    assert strict.exit_code == 1, strict.output
    assert "min_accelerated_fraction" in strict.output and "SHAPE" in strict.output
