"""Collaborative optimization: prune -> cluster -> QAT (PCQAT), step by step.

Run:  python examples/collaborative.py

Each technique alone gives something; together they multiply, as long as
each stage keeps what the previous one made. `tflight.Pipeline` applies the
techniques in order, fine-tunes and strips each, and makes the later ones
preserve the earlier results: clustering keeps the zeros, QAT keeps both the
zeros and the centroids. We also show parameter-efficient fine-tuning: train
only the classifier head during a compression stage.
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

keras.utils.set_random_seed(0)
model = keras.Sequential(
    [
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv"),
        keras.layers.MaxPooling2D(2, name="pool"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(128, activation="relu", name="fc"),
        keras.layers.Dense(10, name="logits"),
    ]
)
model.compile(optimizer="adam", loss=loss, metrics=["accuracy"])
model.fit(data.x_train, data.y_train, epochs=20, batch_size=32, verbose=0)

steps_per_epoch = int(np.ceil(len(data.x_train) / 32))
compile_kwargs = {"optimizer": keras.optimizers.Adam(1e-4), "loss": loss}


def report(name, result):
    predictions = converters.TFLiteModel(result.flatbuffer).predict(data.x_test)
    accuracy = np.mean(predictions.argmax(axis=1) == data.y_test)
    print(f"{name:<24} accuracy {accuracy:.2%}  gzip {result.gzip_size:>8,} B")


calibration = data.x_train[:300]
report("float", converters.convert(model, "fp32"))

# 1. PCQAT: 80 % sparsity, 16 shared values per kernel, int8, each stage
#    fine-tuned for 6 epochs.
pcqat = tflight.Pipeline(
    [
        tflight.Prune(sparsity=tflight.PolynomialDecay(0.8, end_step=4 * steps_per_epoch)),
        tflight.Cluster(n_clusters=16),
        tflight.QAT(),
    ]
).fit(model, data.x_train, data.y_train, compile=compile_kwargs, epochs=6, batch_size=32)
pcqat.summary()
result = converters.convert(pcqat.model, "int8", representative_data=calibration)
report("PCQAT int8", result)
tflight.check_agreement(pcqat.model, result, data.x_test, y=data.y_test).summary()
tflight.sparsity_report(pcqat.model).summary()

# 2. PQAT with parameter-efficient fine-tuning: only `fc` and `logits` train.
pqat = tflight.Pipeline(
    [tflight.Prune(sparsity=0.5, select=keras.layers.Dense), tflight.QAT()]
).fit(
    model,
    data.x_train,
    data.y_train,
    compile=compile_kwargs,
    epochs=3,
    batch_size=32,
    train=["fc", "logits"],
)
report(
    "PQAT (Dense only) int8",
    converters.convert(pqat.model, "int8", representative_data=calibration),
)
