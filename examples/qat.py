"""Quantization-aware training on the bundled digits, step by step.

Run:  python examples/qat.py

Post-training int8 quantization is a one-liner, but rounding costs accuracy.
Quantization-aware training (QAT) fine-tunes with the rounding simulated, so
the int8 model keeps the float accuracy. We also check that the `.tflite`
agrees with the QAT Keras model: a gap there ("QAT good, TFLite bad") must
never pass silently.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

import converters  # noqa: E402
import tflight  # noqa: E402
from tflight._keras import keras  # noqa: E402 - imports TensorFlow quietly

data = tflight.load_digits(seed=0)
loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

# 1. Train a float Keras 3 model.
keras.utils.set_random_seed(0)
model = keras.Sequential(
    [
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv"),
        keras.layers.MaxPooling2D(2, name="pool"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(64, activation="relu", name="fc"),
        keras.layers.Dense(10, name="logits"),
    ]
)
model.compile(optimizer="adam", loss=loss, metrics=["accuracy"])
model.fit(data.x_train, data.y_train, epochs=20, batch_size=32, verbose=0)


def litert_accuracy(result):
    predictions = converters.TFLiteModel(result.flatbuffer).predict(data.x_test)
    return np.mean(predictions.argmax(axis=1) == data.y_test)


calibration = data.x_train[:300]
print(f"float           {litert_accuracy(converters.convert(model, 'fp32')):.2%}")
ptq = converters.convert(model, "int8", representative_data=calibration)
print(f"PTQ int8        {litert_accuracy(ptq):.2%}")

# 2. Wrap a copy of the model with fake quantization and fine-tune briefly
#    with a small learning rate. QAT needs no callback.
qat = tflight.qat(model, compile={"optimizer": "adam", "loss": loss, "metrics": ["accuracy"]})
qat.optimizer.learning_rate = 1e-4
tflight.fit(qat, data.x_train, data.y_train, epochs=5, batch_size=32, verbose=0)

# 3. The QAT model is what the converter needs: `strip_qat` checks it.
result = converters.convert(
    tflight.strip_qat(qat), "int8", representative_data=calibration
)
print(f"QAT int8        {litert_accuracy(result):.2%}  ({result.size:,} B)")

# 4. Does the int8 .tflite decide like the QAT Keras model? Raises
#    CompressionError below 99 % top-1 agreement.
tflight.check_agreement(qat, result, data.x_test, y=data.y_test).summary()

# 5. Selective QAT: keep a layer in float. Convert such a model in "dynamic"
#    mode, so the kept layer really stays float (an "int8" conversion would
#    quantize it post-training, and check_agreement would tell you).
selective = tflight.qat(
    model, keep_float=["logits"], compile={"optimizer": "adam", "loss": loss}
)
tflight.fit(selective, data.x_train, data.y_train, epochs=2, batch_size=32, verbose=0)
mixed = converters.convert(selective, "dynamic")
tflight.check_agreement(selective, mixed, data.x_test, y=data.y_test).summary()
