"""A saved `Distiller` loaded back from its `.keras` file (`load_distiller`).

The file records the Keras generation that saved it; the distiller class of
that generation is registered before Keras reads the file, so that the saved
teacher, student and losses come back as one `Distiller`. (The student is
saved on its own through `tflight._files.save_model`.)
"""

from __future__ import annotations

import os

from tflight import _io
from tflight._keras import keras, tf_keras
from tflight.distillation.distiller import Distiller, _distiller_class
from tflight.errors import DistillationError

__all__ = ["load_distiller"]


def load_distiller(path: str | os.PathLike[str]) -> Distiller:
    """Loads a `Distiller` saved with `distiller.save("....keras")`.

    The Keras generation is read from the file. Custom losses must be imported
    (defined) before loading. A distiller whose student is QAT-wrapped does not
    load back: TF-MOT's `QuantizeLayer` cannot reload from the `.keras` format
    (true of a plain QAT model too); keep such a run with `save_weights` /
    `load_weights` on a distiller built the same way.

    Raises:
      DistillationError: the file is missing, not a `.keras` file, or does not
        hold a distiller.
    """
    path = os.fspath(path)
    if not path.endswith(".keras"):
        raise DistillationError(f"A distiller is saved as a .keras file, got {path!r}.")
    if not os.path.isfile(path):
        raise DistillationError(f"Distiller file {path!r} does not exist.")
    generation = _io.model_file_generation(path, error=DistillationError)
    try:
        _distiller_class(generation)  # registered under its name before the file is read
        if generation == "keras3":
            model = keras.saving.load_model(path)
        else:
            with _io.tfmot_scope():
                model = tf_keras().models.load_model(path)
    except DistillationError:
        raise
    except Exception as e:  # noqa: BLE001
        raise DistillationError(f"Could not load a distiller from {path!r}: {e}") from e
    if not isinstance(model, Distiller):
        raise DistillationError(f"{path!r} holds a {type(model).__name__}, not a Distiller.")
    return model
