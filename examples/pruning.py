"""Magnitude pruning on the bundled digits, step by step.

Run:  python examples/pruning.py

We train a small Keras 3 CNN, prune 80 % of its weights while fine-tuning,
strip the pruning wrappers, and convert to TFLite. Pruning alone does not make
a `.tflite` file smaller (zeros still take 4 bytes each) but it makes it
compress well, and TFLite's sparse storage can skip the zeros. Combined with
int8 the gzip size drops by close to ten times on this small model.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

import converters  # noqa: E402
import tflight  # noqa: E402
from tflight._keras import keras  # noqa: E402 - imports TensorFlow quietly

# 1. Real data: 1,797 8x8 handwritten digits shipped inside scikit-learn.
data = tflight.load_digits(seed=0)

# 2. An ordinary Keras 3 model, trained as usual.
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
model.compile(
    optimizer="adam",
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    metrics=["accuracy"],
)
model.fit(data.x_train, data.y_train, epochs=20, batch_size=32, verbose=0)
print(f"float accuracy: {model.evaluate(data.x_test, data.y_test, verbose=0)[1]:.2%}")

# 3. Choose a schedule that fits the fine-tune. With 43 steps per epoch and 8
#    epochs, ramp sparsity from 0 to 80 % over the first 6 epochs and let the
#    network recover during the last 2. The update frequency is chosen for us
#    so that the ramp really ends at 80 % (TF-MOT's default of every 100 steps
#    would leave a short fine-tune at 0 %).
steps_per_epoch = int(np.ceil(len(data.x_train) / 32))
schedule = tflight.PolynomialDecay(0.8, end_step=6 * steps_per_epoch)

# 4. Wrap a copy of the model (Keras 3 goes through the tf_keras bridge; `model`
#    itself is left alone). TF-MOT drops the optimizer, so pass compile kwargs;
#    a Keras 3 loss object is translated for us.
pruned = tflight.prune(
    model,
    sparsity=schedule,
    compile={
        "optimizer": "adam",
        "loss": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        "metrics": ["accuracy"],
    },
)

# 5. Fine-tune. Pruning needs the UpdatePruningStep callback: `tflight.fit`
#    adds it (or pass `callbacks=tflight.callbacks(pruned)` to `pruned.fit`;
#    forgetting it raises MissingCallbackError before the first step).
tflight.fit(pruned, data.x_train, data.y_train, epochs=8, batch_size=32, verbose=0)

# 6. Strip: checks every layer reached its target, then removes the wrappers.
stripped = tflight.strip_pruning(pruned)
tflight.sparsity_report(stripped).summary()

# 7. Convert and measure in LiteRT.
float_tflite = converters.convert(model, "fp32")
pruned_int8 = converters.convert(stripped, "int8", representative_data=data.x_train[:200])
sparse_fp32 = converters.convert(stripped, "fp32", sparse=True)
for name, result in [
    ("float", float_tflite),
    ("80% pruned, sparse storage", sparse_fp32),
    ("80% pruned + int8", pruned_int8),
]:
    predictions = converters.TFLiteModel(result.flatbuffer).predict(data.x_test)
    accuracy = np.mean(predictions.argmax(axis=1) == data.y_test)
    print(
        f"{name:<28} accuracy {accuracy:.2%}  size {result.size:>8,} B  "
        f"gzip {result.gzip_size:>8,} B ({float_tflite.gzip_size / result.gzip_size:.1f}x)"
    )
