"""Structured channel pruning on the bundled digits, step by step.

Run:  python examples/structured.py

Magnitude pruning leaves every layer its full width, so the `.tflite` file is
no faster. Here we remove whole channels instead: half of the convolutions'
multiply-accumulates go, the model is rebuilt narrower, fine-tuned with the
uncut model as a teacher, and converted. The residual connection below is
handled for us: both convolutions that feed the `Add` lose the same channels.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

import converters  # noqa: E402
import tflight  # noqa: E402
from tflight._keras import keras  # noqa: E402 - imports TensorFlow quietly
from tflight.shrink import DependencyGraph, channel_sensitivity, fine_tune, prune_channels  # noqa: E402

# 1. Real data and an ordinary Functional model with BatchNorm and a residual add.
data = tflight.load_digits(seed=0)
keras.utils.set_random_seed(0)
inputs = keras.Input((8, 8, 1))
x = keras.layers.Conv2D(32, 3, padding="same", use_bias=False)(inputs)
x = keras.layers.BatchNormalization()(x)
x = keras.layers.ReLU()(x)
y = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(x)
x = keras.layers.Add()([x, y])
x = keras.layers.Conv2D(64, 3, strides=2, padding="same", activation="relu")(x)
x = keras.layers.GlobalAveragePooling2D()(x)
model = keras.Model(inputs, keras.layers.Dense(10)(x))
fine_tune(model, data.x_train, data.y_train, epochs=30)

# 2. Which channels are coupled? One graph answers for every structural technique.
for group in DependencyGraph(model).groups():
    state = "cuttable" if group.prunable else f"kept ({'; '.join(group.blocked)})"
    print(f"{group.name:>12}: {group.size:>3} channels, {state}; layers {group.members}")

# 3. How sensitive is each group? Measured on held-out data (the first 200 test
#    images), never on training data; step 6 reports accuracy on the other 250.
ratios = (0.125, 0.25, 0.375, 0.5, 0.625, 0.75)
sensitivity = channel_sensitivity(model, data.x_test[:200], data.y_test[:200], ratios=ratios)
sensitivity.summary()

# 4. Cut half the MACs, with ratios allocated from those curves.
result = prune_channels(model, ratio=sensitivity.allocate(flops_target=0.5))
result.summary()

# 4b. Or allocate for a device: keep 60 % of the int8 latency estimated on the
#     Cortex-A53 profile (the profile's cost model applied to each layer of the
#     cut graph; estimated, not measured).
for_a53 = sensitivity.allocate(latency_target=0.6, profile="cortex-a53", arithmetic="int8")
print("ratios for 60 % of the estimated Cortex-A53 latency:", for_a53)

# 5. Recover: fine-tune the cut model, distilling from the uncut one.
fine_tune(result.model, data.x_train, data.y_train, teacher=model, epochs=10, learning_rate=5e-4)


# 6. Convert both and compare accuracy through LiteRT.
def lite_accuracy(m):
    out = converters.convert(m, "fp32")
    pred = converters.TFLiteModel(out.flatbuffer).predict(data.x_test[200:])
    return np.mean(np.argmax(pred, -1) == data.y_test[200:]), out.size


for name, m in (("uncut", model), ("cut", result.model)):
    accuracy, size = lite_accuracy(m)
    print(f"{name:>5}: LiteRT accuracy {accuracy:.2%}, {size:,} bytes")
