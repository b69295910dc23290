"""A .tflite model run on the host, float in and out, whatever types its edges have."""

from __future__ import annotations

import numpy as np
import pytest

from edgepack.model.tflite_runner import TfliteRunner, dequantize, quantize


def test_quantize_rounds_clips_and_dequantize_inverts_it_within_half_a_step():
    x = np.array([-1000.0, -0.26, 0.0, 0.24, 1000.0], np.float32)
    q = quantize(x, 0.5, 3, np.int8)
    assert q.dtype == np.int8 and q.tolist() == [-128, 2, 3, 3, 127]
    inside = x[1:4]
    assert np.all(np.abs(dequantize(quantize(inside, 0.5, 3, np.int8), 0.5, 3) - inside) <= 0.25)


@pytest.mark.slow
def test_an_int8_edged_model_answers_in_float_close_to_the_keras_model(digits):
    import keras
    import tensorflow as tf

    x, y = digits
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x[:500], y[:500], epochs=3, verbose=0)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x[i : i + 1]] for i in range(100))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    runner = TfliteRunner(converter.convert())

    inputs, outputs = runner.specs()
    assert inputs[0].dtype == "int8" and inputs[0].scale and outputs[0].dtype == "int8"
    got = runner.predict([x[500:600]], ["input"], [next(iter(runner.output_details))])[0]
    assert got.dtype == np.float32 and got.shape == (100, 10)
    assert np.mean(got.argmax(1) == model.predict(x[500:600], verbose=0).argmax(1)) >= 0.95
