"""What recovery shares across formats: when layer fallback is worth trying, and when it stops."""

from __future__ import annotations

from edgepack.builder.recover.common import Attempt, LayerError, stalled, why_not_layers


def test_layer_fallback_is_tried_only_where_a_few_layers_dominate():
    def errors(*values):
        return [LayerError(f"t{i}", f"l{i}", "CONV_2D", v, "rmse/scale", i) for i, v in enumerate(values)]

    assert why_not_layers(errors(64.9, 1.34, 0.29, 0.28, 0.28, 0.0)) is None  # the input layer dominates
    reason = why_not_layers(errors(0.31, 0.30, 0.29, 0.30, 0.28))  # every layer about plain rounding
    assert reason.startswith("no layer stands out (worst 0.31, median 0.3")


def test_layer_fallback_stops_when_more_layers_stop_helping():
    def attempts(*scores):
        return [Attempt(f"int8 with {i} layer(s) in float", top1_agreement=s) for i, s in enumerate(scores, 1)]

    assert not stalled(attempts(0.90, 0.93))
    assert not stalled(attempts(0.90, 0.90, 0.92))  # the last two still beat what came before
    assert stalled(attempts(0.94, 0.895, 0.93))  # 89.5-94% each time: no trend, stop
    dense = [Attempt("fp16 with 1 layer(s) in fp32", worst_sqnr_db=3.0), Attempt("x", worst_sqnr_db=2.0), Attempt("y", worst_sqnr_db=2.5)]
    assert stalled(dense)


def test_one_or_two_measured_layers_are_the_few_to_try():
    assert why_not_layers([LayerError("t", "dense", "MatMul", 2.96, "SQNR drop dB")]) is None
