"""Knowledge distillation with tflight: a tiny student learns from a bigger teacher.

A compressed model loses accuracy; distillation wins some of it back by training
the small model to match a large model's *softened* outputs, which carry more
information per example than hard labels ("a 2 that looks a bit like a 7").
This walk-through uses scikit-learn's bundled 8x8 digits, so it runs offline in
about a minute on a laptop CPU:

1. train a teacher CNN;
2. distil it into a student over 100 times smaller (soft targets + a feature hint);
3. fine-tune the student with quantization-aware training while still
   distilling, and convert it to a full-int8 `.tflite` checked in LiteRT;
4. plug in a custom distillation loss.

Run:  python examples/distillation.py
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import ClassVar

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import converters  # noqa: E402
import tflight  # noqa: E402
from tflight._keras import keras, tf, tf_keras  # noqa: E402

L = keras.layers


def main() -> None:
    data = tflight.load_digits(seed=0)
    x, y, x_test, y_test = data.x_train, data.y_train, data.x_test, data.y_test
    xent = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    # 1. The teacher: an ordinary Keras 3 CNN. Its last layer outputs logits
    #    (a softmax output would also work: the distiller detects it).
    keras.utils.set_random_seed(0)
    teacher = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            L.Conv2D(32, 3, padding="same", activation="relu"),
            L.Conv2D(32, 3, strides=2, padding="same", activation="relu", name="t_feat"),
            L.Flatten(),
            L.Dense(128, activation="relu"),
            L.Dense(10, name="logits"),
        ],
        name="teacher",
    )
    teacher.compile("adam", xent, metrics=["accuracy"])
    teacher.fit(x, y, epochs=30, batch_size=32, verbose=0)
    print(
        f"teacher: {teacher.count_params():,} params, "
        f"test accuracy {teacher.evaluate(x_test, y_test, verbose=0)[1]:.3f}"
    )

    # 2. The student: a strided convolution and a classifier. `s_feat` has 4
    #    channels where the teacher's `t_feat` has 32 at the same 4x4 size, so
    #    the feature loss learns a 4 -> 32 projection (FitNets' "regressor");
    #    the projection is trained with the student but is not part of it.
    keras.utils.set_random_seed(1)
    student = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            L.Conv2D(4, 3, strides=2, padding="same", activation="relu", name="s_feat"),
            L.Flatten(),
            L.Dense(10, name="logits"),
        ],
        name="student",
    )
    distiller = tflight.Distiller(
        teacher,
        student,
        temperature=4.0,  # soften both outputs before comparing them
        alpha=0.1,  # 10 % true labels, 90 % the teacher's soft targets
        feature_layers=[("t_feat", "s_feat")],
        feature_weight=0.5,
    )
    distiller.compile(optimizer=keras.optimizers.Adam(3e-3))

    # The teacher does not change during training, so its outputs are computed
    # once instead of every epoch. (Not with random augmentation: then every
    # epoch sees new inputs and the teacher must run live.)
    # Soft targets take longer to fit than labels: 30 epochs keep this walk-through
    # short; benchmarks/distillation.py uses 250, which closes most of the gap.
    cache = distiller.cache_teacher(x, y)
    print(f"teacher outputs cached in {cache.seconds:.2f} s")
    distiller.fit(cache.dataset(32, seed=0), epochs=30, verbose=0, validation_data=(x_test, y_test))
    print(
        f"distilled student: {student.count_params():,} params, "
        f"test accuracy {distiller.evaluate(x_test, y_test, verbose=0, return_dict=True)['accuracy']:.3f}"
    )

    # The student exports on its own: the distiller is only the training harness.
    fp32 = converters.convert(student, "fp32")
    print(f"student .tflite (fp32): {fp32.size:,} bytes")

    # 3. Distil during quantization-aware training. TF-MOT works on tf_keras
    #    models only; tflight.qat bridges the Keras 3 student, and the
    #    Distiller becomes a tf_keras model because its student is one. The
    #    Keras 3 teacher keeps running as it is.
    qat = tflight.qat(student)
    qat_distiller = tflight.Distiller(teacher, qat, temperature=4.0, alpha=0.1)
    qat_distiller.compile(optimizer=tf_keras().optimizers.Adam(1e-3))
    qat_distiller.fit(qat_distiller.cache_teacher(x, y).dataset(32, seed=0), epochs=5, verbose=0)
    int8 = converters.convert(tflight.strip_qat(qat), "int8", representative_data=x[:256])
    pred = converters.TFLiteModel(int8.flatbuffer).predict(x_test)
    print(
        f"int8 student .tflite: {int8.size:,} bytes, "
        f"LiteRT test accuracy {(pred.argmax(-1) == y_test).mean():.3f}"
    )

    # 4. A custom loss: any frozen dataclass deriving from DistillationLoss that
    #    returns one value per example. Here: match the raw logits (Ba & Caruana
    #    2014), reported as `logit_mse` during fit. No labels are needed when
    #    no loss uses them.
    @dataclasses.dataclass(frozen=True)
    class LogitMSE(tflight.DistillationLoss):
        name: ClassVar[str] = "logit_mse"

        def per_example(self, inputs):
            diff = inputs.teacher_logits - inputs.student_logits
            return tf.reduce_mean(tf.square(diff), axis=-1)

    keras.utils.set_random_seed(2)
    student2 = keras.models.clone_model(student)
    custom = tflight.Distiller(
        teacher, student2, losses=[LogitMSE(weight=0.1), tflight.SoftTargetLoss(4.0, weight=1.0)]
    )
    custom.compile(optimizer=keras.optimizers.Adam(3e-3))
    history = custom.fit(x, epochs=10, batch_size=32, verbose=0).history  # unlabelled data
    print(f"custom loss: logit_mse {history['logit_mse'][0]:.2f} -> {history['logit_mse'][-1]:.2f}")


if __name__ == "__main__":
    main()
