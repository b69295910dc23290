"""Export a model to TFLite at a given precision (fp32, fp16, dynamic-range int8, full int8)."""

from __future__ import annotations


from edgepack.builder.convert import Artifact
from edgepack.errors import BuildError
from edgepack.model.data import Dataset
from edgepack.model.source import SourceModel
from edgepack.model.tflite_runner import TfliteRunner
from edgepack.profile.schema import IoDtype, Precision, Profile


def export_tflite(model: SourceModel, profile: Profile, calibration: Dataset | None) -> Artifact:
    """Convert MODEL to TFLite at the profile's precision; the artifact is `model.tflite`.

    Raises:
        BuildError: int8 without calibration data, or a conversion the converter rejects.
    """
    return tflite_artifact(convert_tflite(model, profile.build.precision, profile.build.io_dtype, calibration))


def tflite_artifact(content: bytes) -> Artifact:
    """Wrap .tflite bytes as the bundle's `model.tflite`, with its specs and a host runner."""
    runner = TfliteRunner(content)
    inputs, outputs = runner.specs()
    return Artifact({"model.tflite": content}, "model.tflite", inputs, outputs, runner.predict)


def convert_tflite(model: SourceModel, precision: Precision, io_dtype: IoDtype, calibration: Dataset | None) -> bytes:
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

    if precision is Precision.int8:
        if calibration is None or len(calibration) == 0:
            raise BuildError("full-integer int8 needs calibration data", hint="pass --data, or --synthetic-calibration")
        converter = int8_converter(model, calibration, io_dtype)
    else:
        converter = model.tflite_converter()
        if precision is not Precision.fp32:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]  # dynamic-range int8 weights unless told otherwise
        if precision is Precision.fp16:
            converter.target_spec.supported_types = [tf.float16]
    return run_converter(converter, precision)


def int8_converter(
    model: SourceModel, calibration: Dataset, io_dtype: IoDtype = IoDtype.float32, per_channel: bool = True, integer_only: bool = True,
    activations16: bool = False,
):
    """Return a converter set up for int8 calibrated on CALIBRATION.

    INTEGER_ONLY refuses float fallback ops (what a full-integer build needs); the quantization
    debugger wants it off. IO_DTYPE other than float32 makes the inputs and outputs integers.
    ACTIVATIONS16 quantizes activations to int16 and weights to int8 (TFLite's "16x8" mode: 256
    times finer activations at about the int8 size, but run by TFLite's reference kernels)."""
    import tensorflow as tf

    converter = model.tflite_converter()
    names = [spec.name for spec in model.inputs]

    def representative():
        for i in range(len(calibration)):
            yield {name: x[i : i + 1] for name, x in zip(names, calibration.x)}

    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter._experimental_disable_per_channel = not per_channel  # no public switch for this
    if activations16:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    elif integer_only:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if io_dtype is not IoDtype.float32:
        converter.inference_input_type = getattr(tf, io_dtype.value)
        converter.inference_output_type = getattr(tf, io_dtype.value)
    return converter


def run_converter(converter, precision: Precision) -> bytes:
    """Convert, turning the converter's many exception types (with long MLIR dumps) into one line."""
    try:
        return converter.convert()
    except Exception as exc:
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise BuildError(
            f"TFLite conversion to {precision.value} failed: {first[:300]}",
            hint="an op without a TFLite kernel at this precision; try another build.precision",
        ) from None
