"""Export a model to TFLite at a given precision (fp32, fp16, dynamic-range int8, full int8)."""

from __future__ import annotations

from edgepack.errors import BuildError
from edgepack.model.data import Dataset
from edgepack.model.source import SourceModel
from edgepack.profile.schema import IoDtype, Precision


def export_tflite(model: SourceModel, precision: Precision, io_dtype: IoDtype, calibration: Dataset | None) -> bytes:
    """Convert MODEL to a .tflite flatbuffer.

    Args:
        model: the (possibly pruned) source model.
        precision: fp32, fp16 (weights), dynamic-int8 (weights, activations float), or int8 (everything).
        io_dtype: for int8, the type of the model's inputs and outputs (float32 keeps float edges).
        calibration: representative inputs; required for int8.

    Returns:
        The .tflite bytes.

    Raises:
        BuildError: int8 without calibration data, or a conversion the converter rejects.
    """
    import tensorflow as tf

    converter = model.tflite_converter()
    if precision is Precision.fp16:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif precision is Precision.dynamic_int8:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif precision is Precision.int8:
        if calibration is None or len(calibration) == 0:
            raise BuildError("full-integer int8 needs calibration data", hint="pass --data, or --synthetic-calibration")
        names = [spec.name for spec in model.inputs]

        def representative():
            for i in range(len(calibration)):
                yield {name: x[i : i + 1] for name, x in zip(names, calibration.x)}

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if io_dtype is not IoDtype.float32:
            converter.inference_input_type = getattr(tf, io_dtype.value)
            converter.inference_output_type = getattr(tf, io_dtype.value)
    try:
        return converter.convert()
    except Exception as exc:  # the converter raises many types, with long MLIR dumps
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise BuildError(
            f"TFLite conversion to {precision.value} failed: {first[:300]}",
            hint="an op without a TFLite kernel at this precision; try another build.precision",
        ) from None
