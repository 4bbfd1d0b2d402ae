"""Weight clustering (weight sharing) on the bundled digits, step by step.

Run:  python examples/clustering.py

Clustering ties every weight of a layer to one of a few shared values (16
here), learned while fine-tuning. The stripped model is an ordinary Keras
model whose kernels hold at most 16 distinct values: it compresses very well,
and converts to int8 like any other model.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

import converters  # noqa: E402
import tflight  # noqa: E402
from tflight._keras import tf_keras  # noqa: E402

# tf_keras (Keras 2) models work directly, no bridge needed.
k = tf_keras()
data = tflight.load_digits(seed=0)
loss = k.losses.SparseCategoricalCrossentropy(from_logits=True)

k.utils.set_random_seed(0)
model = k.Sequential(
    [
        k.Input((8, 8, 1)),
        k.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv"),
        k.layers.MaxPooling2D(2, name="pool"),
        k.layers.Flatten(name="flatten"),
        k.layers.Dense(128, activation="relu", name="fc"),
        k.layers.Dense(10, name="logits"),
    ]
)
model.compile(optimizer="adam", loss=loss, metrics=["accuracy"])
model.fit(data.x_train, data.y_train, epochs=20, batch_size=32, verbose=0)

# 1. Cluster every layer with a kernel into 16 centroids, initialised with
#    k-means++. Layers too small for 16 clusters would be named in an error
#    (TF-MOT would skip them silently); `unsupported="skip"` makes it explicit.
clustered = tflight.cluster(
    model,
    n_clusters=16,
    init="kmeans++",
    compile={"optimizer": k.optimizers.Adam(1e-4), "loss": loss, "metrics": ["accuracy"]},
)

# 2. Fine-tune: the centroids move, the assignments follow.
tflight.fit(clustered, data.x_train, data.y_train, epochs=5, batch_size=32, verbose=0)

# 3. Strip and look: at most 16 distinct values per kernel.
plain = tflight.strip_clustering(clustered)
print("distinct kernel values:", tflight.clustering.unique_weights(plain))

# 4. Per-channel clustering gives each conv output channel its own centroids.
per_channel = tflight.cluster(
    model,
    n_clusters=4,
    per_channel=True,
    select=k.layers.Conv2D,
    compile={"optimizer": k.optimizers.Adam(1e-4), "loss": loss},
)
tflight.fit(per_channel, data.x_train, data.y_train, epochs=2, batch_size=32, verbose=0)

# 5. Convert and compare.
reference = converters.convert(model, "fp32")
for name, m, mode in [
    ("float", model, "fp32"),
    ("16 clusters", plain, "fp32"),
    ("16 clusters + int8", plain, "int8"),
]:
    result = converters.convert(m, mode, representative_data=data.x_train[:200])
    accuracy = np.mean(
        converters.TFLiteModel(result.flatbuffer).predict(data.x_test).argmax(1) == data.y_test
    )
    print(
        f"{name:<20} accuracy {accuracy:.2%}  gzip {result.gzip_size:>8,} B "
        f"({reference.gzip_size / result.gzip_size:.1f}x smaller)"
    )
