"""Mixed precision on the bundled digits: which layers can go to 4 bits, and a budgeted search.

Run:  python examples/mixed_precision.py

Uniform int8 is one choice for the whole model. Here we look at each layer
(how much does quantizing it cost? how much does keeping it float gain?) and
let a search pick float, fp16, int16x8, int8 or int4 per layer: the smallest
model whose accuracy drop stays within a budget *on new data*. The search
accepts a model only if a one-sided 95% bound on its drop is within the
budget, so it needs enough validation samples to say so; with too few it
refuses and tells you how many it needs.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


import converters  # noqa: E402
import tflight  # noqa: E402
from tflight._keras import keras  # noqa: E402 - imports TensorFlow quietly
from tflight.errors import PrecisionError  # noqa: E402
from tflight.precision import precision_sensitivity, quantize_int4, search_precision  # noqa: E402

data = tflight.load_digits(seed=0)
# Train on part of the training digits; keep the rest as validation data the
# model never saw (the search measures its drops there).
x_fit, y_fit = data.x_train[:647], data.y_train[:647]
x_val, y_val = data.x_train[647:], data.y_train[647:]
calibration = x_fit[:300]

# 1. A float Keras model and its float .tflite.
keras.utils.set_random_seed(0)
inp = keras.Input((8, 8, 1))
h = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv")(inp)
h = keras.layers.MaxPooling2D(2)(h)
h = keras.layers.Flatten()(h)
h = keras.layers.Dense(64, activation="relu", name="fc")(h)
model = keras.Model(inp, keras.layers.Dense(10, name="logits")(h))
model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
model.fit(x_fit, y_fit, epochs=30, batch_size=32, verbose=0)
fp32 = converters.convert(model, "fp32").flatbuffer
print(f"float .tflite: {len(fp32):,} bytes")

# 2. Per-layer sensitivity, both ways: "int8 alone" / "int4 alone" quantize one
#    layer of the float model; "kept float" keeps one layer float in an
#    all-int4 model. Cells: output SNR against float / accuracy points lost.
report = precision_sensitivity(fp32, x_val, y_val, calibration_data=calibration,
                               precisions=["int8", "int4"])
report.summary()

# 3. A budget the data cannot resolve is refused, with the number needed:
#    0.5 pt at 95% confidence needs ~600 search samples without a single loss.
try:
    search_precision(fp32, x_val[:300], y_val[:300], calibration_data=calibration, max_drop=0.5)
except PrecisionError as e:
    print(f"\nrefused: {e}\n")

# 4. The search on all 700 validation digits; the test digits re-check it.
result = search_precision(fp32, x_val, y_val, calibration_data=calibration, max_drop=1.0,
                test_data=(data.x_test, data.y_test))
result.summary()
result.save("/tmp/digits_mixed.tflite")

# 5. Int4 storage wherever LiteRT has int4 kernels (int8 elsewhere): the raw
#    file shrinks, not only its gzip.
int4 = quantize_int4(fp32, calibration_data=calibration,
                     test_data=(data.x_test, data.y_test))
print(f"\nint4 where kernels: {int4.size:,} bytes ({int4.size_ratio:.1f}x smaller); "
      f"{int4.verification.short()}")
