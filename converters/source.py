"""Loading a source model and exporting it once for every conversion.

A source is a tf_keras model, a Keras 3 Sequential or Functional model (in
memory or in a `.keras` file), an `.h5` file, or a SavedModel directory. Each is
wrapped in a `Source` that knows its inputs and outputs, can run itself on
numpy inputs (the reference for validation) and can export itself to one
SavedModel that all conversion modes then share: the export is about half the
cost of converting a MobileNetV2, so doing it once for N modes matters.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import warnings
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from converters.errors import ConversionWarning, ModelLoadError, UnsupportedModelError
from converters.twin import float32_twin

__all__ = ["InputSpec", "Source", "load_source"]

_SIGNATURE_KEY = "serving_default"


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """One model input: its signature name, shape (None for free dims) and dtype."""

    name: str
    shape: tuple[int | None, ...]
    dtype: np.dtype

    def describe(self) -> str:
        dims = ", ".join("None" if d is None else str(d) for d in self.shape)
        return f"{self.name}: ({dims}) {self.dtype}"


@dataclasses.dataclass
class Source:
    """A loaded source model, ready to be run and exported.

    Attributes:
      kind: `"keras3"`, `"tf_keras"` or `"saved_model"`.
      description: a short human description, used in messages.
      inputs: the model inputs, in the order the model takes them.
      output_names: names of the outputs in the exported signature.
      notes: what was done to the model to convert it (e.g. a float32 twin of
        a mixed-precision model), said in every result.
      qat_float_kernels: in a quantization-aware-trained model, the layers
        with a kernel that QAT left float (named when int8 fails).
    """

    kind: str
    description: str
    inputs: list[InputSpec]
    output_names: list[str]
    _call: Callable[[list[Any]], dict[str, Any]]
    _variables: list[Any]
    _saved_model_dir: str | None = None
    _keepalive: Any = None
    _rnns: list[Any] = dataclasses.field(default_factory=list)
    recurrent: str | None = None
    notes: list[str] = dataclasses.field(default_factory=list)
    qat_float_kernels: list[str] = dataclasses.field(default_factory=list)

    @property
    def recurrent_loop(self) -> bool:
        """Whether recurrent layers are traced as a loop (free number of time steps)."""
        return self.recurrent == "loop"

    def run(self, arrays: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """Runs the source model on numpy inputs; returns outputs by signature name."""
        import tensorflow as tf

        tensors = [tf.constant(a) for a in arrays]
        out = self._call(tensors)
        return {k: np.asarray(v) for k, v in out.items()}

    def _serving_function(self, static_batch: int | None) -> tuple[Any, Any]:
        """A traced serving function with one named argument per input.

        Keras 3 recurrent layers (LSTM, GRU, SimpleRNN, also inside
        Bidirectional) are traced unrolled over their fixed number of time
        steps: the result is plain FULLY_CONNECTED / LOGISTIC / TANH / MUL /
        ADD ops, which every mode (int8 included) has kernels for. Keras 3's
        symbolic loop would otherwise become a TensorList whose element shape
        holds the free batch dimension, which the converter refuses. With a
        free number of time steps nothing can be unrolled: the loop is then
        traced with batch size 1, which the float modes convert.
        """
        import tensorflow as tf

        call = self._call

        def trace(batch: int | None) -> tuple[Any, Any]:
            specs = [
                tf.TensorSpec(
                    (batch, *s.shape[1:]) if batch else s.shape,
                    tf.as_dtype(s.dtype),
                    name=s.name,
                )
                for s in self.inputs
            ]

            @tf.function(input_signature=specs, autograph=False)
            def serve(*xs):
                return call(list(xs))

            return serve, serve.get_concrete_function()

        if not self._rnns:
            return trace(static_batch)
        # tf_keras LSTM / GRU (what TF-MOT's QAT hands back) decide in their
        # constructor to call a fused kernel that ignores `unroll`; it is
        # switched off for the trace too.
        saved = [
            (layer, layer.unroll, getattr(layer, "_could_use_gpu_kernel", None))
            for layer in self._rnns
        ]
        try:
            for layer, _, fused in saved:
                layer.unroll = True
                if fused is not None:
                    layer._could_use_gpu_kernel = False
            traced = trace(static_batch)
            self.recurrent = "unrolled"
            return traced
        except ValueError as e:
            if "unroll" not in str(e).lower():
                raise
        finally:
            for layer, unroll, fused in saved:
                layer.unroll = unroll
                if fused is not None:
                    layer._could_use_gpu_kernel = fused
        self.recurrent = "loop"
        return trace(static_batch or 1)

    def freeze(self, *, static_batch: int | None = None) -> Any:
        """Traces the model once and folds its variables into constants.

        The frozen function is what every conversion mode starts from: tracing
        and freezing is the expensive, mode-independent part of a conversion.
        Its inputs are in `inputs` order and its outputs in sorted
        `output_names` order.
        """
        from tensorflow.python.framework.convert_to_constants import (
            convert_variables_to_constants_v2,
        )

        _, concrete = self._serving_function(static_batch)
        return convert_variables_to_constants_v2(concrete)

    def export(self, directory: str, *, static_batch: int | None = None) -> str:
        """Exports one SavedModel with a `serving_default` signature; returns its path.

        A SavedModel source with free batch dimensions is used as it is, without
        a new export, unless `static_batch` asks for fixed shapes.
        """
        import tensorflow as tf

        if self._saved_model_dir is not None and static_batch is None:
            return self._saved_model_dir
        serve, concrete = self._serving_function(static_batch)
        module = tf.Module()
        # Track the variables themselves (not the Keras objects) so that saving
        # writes only weights and the traced graph, not Keras metadata.
        module.weights = list(self._variables)
        module.keepalive = self._keepalive
        module.serve = serve
        path = os.path.join(directory, "saved_model")
        try:
            tf.saved_model.save(module, path, signatures={_SIGNATURE_KEY: concrete})
        except Exception as e:  # noqa: BLE001 - TensorFlow raises many types here
            raise UnsupportedModelError(
                f"Could not export {self.description} to a SavedModel: {_first_line(e)}"
            ) from e
        return path


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _sanitize(names: Sequence[str | None], prefix: str) -> list[str]:
    """Valid, unique signature names (letters, digits, underscores)."""
    out: list[str] = []
    for i, name in enumerate(names):
        base = re.sub(r"[^A-Za-z0-9_]", "_", (name or "").split(":")[0]) or f"{prefix}_{i}"
        if not base[0].isalpha():
            base = f"{prefix}_{base}"
        candidate, k = base, 1
        while candidate in out:
            candidate, k = f"{base}_{k}", k + 1
        out.append(candidate)
    return out


def _np_dtype(dtype: Any) -> np.dtype:
    import tensorflow as tf

    return np.dtype(tf.as_dtype(dtype).as_numpy_dtype)


def load_source(model: Any) -> Source:
    """Wraps a model object or a model path as a `Source`.

    Args:
      model: a tf_keras model, a Keras 3 model, or a path (str or `Path`) to a
        `.keras` file, an `.h5` file or a SavedModel directory.

    Returns:
      A `Source`.

    Raises:
      ModelLoadError: the path does not exist or does not hold a model.
      UnsupportedModelError: the object is not a model this package converts.
    """
    if isinstance(model, Source):
        return model
    if isinstance(model, (str, os.PathLike)):
        return _load_path(Path(model))
    return _from_keras(model)


def _keras_generation(model: Any) -> str | None:
    for cls in type(model).__mro__:
        root = cls.__module__.split(".")[0]
        if root == "tf_keras" and cls.__name__ == "Model":
            return "tf_keras"
        if root == "keras" and cls.__name__ == "Model":
            return "keras3"
    return None


def _from_keras(model: Any) -> Source:
    kind = _keras_generation(model)
    if kind is None:
        raise UnsupportedModelError(
            f"Expected a Keras model (tf_keras or Keras 3) or a path to a .keras/.h5 file "
            f"or a SavedModel directory, got {type(model).__name__}."
        )
    name = getattr(model, "name", "model")
    label = "Keras 3" if kind == "keras3" else "tf_keras"
    notes: list[str] = []
    if kind == "keras3":
        twin, label = float32_twin(model)
        if twin is not None:
            model = twin
            why = (
                f"converted a float32 twin of {label} with the same weights: the TFLite "
                "converter needs float32 compute"
            )
            notes.append(why)
            warnings.warn(why, ConversionWarning, stacklevel=3)
    try:
        inputs = list(model.inputs)
    except (AttributeError, ValueError):
        inputs = []
    if not inputs and kind == "keras3":
        # A subclassed model has no symbolic inputs, but the shapes of the
        # call that built it (`fit` or a first call) are recorded: trace that.
        inputs = _called_inputs(model)
    if not inputs:
        raise UnsupportedModelError(
            f"The {label} model {name!r} ({type(model).__name__}) has no defined inputs: it "
            "has not been built (subclassed models are built by their first call or `fit`). "
            "Call it once on a batch of inputs, build it as a Sequential or Functional model, "
            "or pass a SavedModel directory.",
            fix="call the model once on a batch of inputs",
        )
    # Models with dict inputs (keras-hub backbones: token_ids, segment_ids,
    # padding_mask) are called with a dict and their inputs named by key.
    structure = _structure(model, "input")
    keys: list[str] | None = None
    if isinstance(structure, dict):
        by_id = {id(t): k for k, t in structure.items()}
        if all(id(t) in by_id for t in inputs):
            keys = [by_id[id(t)] for t in inputs]
    raw_names = keys if keys is not None else [getattr(t, "name", None) for t in inputs]
    names = _sanitize(raw_names, "input")
    specs = [
        InputSpec(n, tuple(None if d is None else int(d) for d in t.shape), _np_dtype(t.dtype))
        for n, t in zip(names, inputs, strict=False)
    ]
    try:
        n_out = len(model.outputs) if getattr(model, "outputs", None) else 1
    except (AttributeError, ValueError):  # a subclassed model has no symbolic outputs
        n_out = 1
    out_structure = _structure(model, "output")
    out_keys = list(out_structure) if isinstance(out_structure, dict) else None
    if out_keys is not None and len(out_keys) == n_out:
        out_names = _sanitize(out_keys, "output")
    else:
        out_keys = None
        out_names = [f"output_{i}" for i in range(n_out)]
    multi_in = len(inputs) > 1

    def call(xs: list[Any]) -> dict[str, Any]:
        if keys is not None:
            y = model(dict(zip(keys, xs, strict=True)), training=False)
        else:
            y = model(xs if multi_in else xs[0], training=False)
        if isinstance(y, dict):
            ys = [y[k] for k in out_keys] if out_keys is not None else list(y.values())
        else:
            ys = list(y) if isinstance(y, (list, tuple)) else [y]
        return dict(zip(out_names, ys, strict=False))

    if kind == "keras3":
        variables = [v.value for v in model.variables]
    else:
        variables = list(model.variables)
    rnns = _recurrent_layers(model, kind)
    return Source(
        kind=kind,
        description=f"{label} model {name!r}",
        inputs=specs,
        output_names=out_names,
        _call=call,
        _variables=variables,
        _keepalive=model if notes else None,
        _rnns=rnns,
        notes=notes,
        qat_float_kernels=_qat_float_kernels(model),
    )


def _qat_float_kernels(model: Any) -> list[str]:
    """Layers with a kernel left float in a TF-MOT QAT model (none if it is not one)."""
    layers = list(getattr(model, "layers", []) or [])
    if not any(type(layer).__name__.startswith("QuantizeWrapper") for layer in layers):
        return []
    return [
        layer.name
        for layer in layers
        if not type(layer).__name__.startswith(("QuantizeWrapper", "QuantizeLayer"))
        and any(len(w.shape) >= 2 for w in layer.trainable_weights)
    ]


@dataclasses.dataclass
class _CalledInput:
    """The shape and dtype a built subclassed model was called with."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str


def _called_inputs(model: Any) -> list[_CalledInput]:
    """Inputs of a subclassed Keras 3 model, from the shapes its build recorded."""
    shapes = getattr(model, "_build_shapes_dict", None)
    if not shapes or not getattr(model, "built", False):
        return []
    found = []
    dtype = getattr(model, "input_dtype", None) or "float32"
    for key, shape in shapes.items():
        if not isinstance(shape, (tuple, list)) or not all(
            d is None or isinstance(d, int) for d in shape
        ):
            return []  # a nested structure of inputs: not traced from its shapes
        found.append(_CalledInput(str(key), (None, *tuple(shape)[1:]), str(dtype)))
    return found


def _structure(model: Any, which: str) -> Any:
    """`model.input` / `model.output` (a tensor, list or dict), or None."""
    try:
        return getattr(model, which)
    except (AttributeError, ValueError):
        return None


def _recurrent_layers(model: Any, kind: str) -> list[Any]:
    """Every recurrent layer of `model` (Keras 3 or tf_keras), nested ones included.

    Nested models, Bidirectional and wrappers (TF-MOT's QuantizeWrapper,
    PruneLowMagnitude) are looked into, so that the tf_keras model QAT
    produces is unrolled like the Keras 3 model it came from.
    """
    if kind == "keras3":
        import keras

        rnn_class = keras.layers.RNN
    else:
        import tf_keras

        rnn_class = tf_keras.layers.RNN

    found: list[Any] = []
    seen: set[int] = set()

    def walk(layer: Any) -> None:
        if id(layer) in seen:
            return
        seen.add(id(layer))
        if isinstance(layer, rnn_class):
            found.append(layer)
        children = getattr(layer, "_layers", None) if kind == "keras3" else None
        if kind != "keras3" and hasattr(layer, "layers") and layer is not model:
            children = layer.layers
        for child in children or []:
            walk(child)
        for attr in ("forward_layer", "backward_layer", "layer"):
            child = getattr(layer, attr, None)
            if child is not None and hasattr(child, "trainable_weights"):
                walk(child)

    for layer in getattr(model, "layers", []):
        walk(layer)
    return found


def _load_path(path: Path) -> Source:
    if not path.exists():
        raise ModelLoadError(
            f"No such file or directory: {str(path)!r}. Pass a .keras or .h5 file or a "
            "SavedModel directory."
        )
    if path.is_dir():
        return _load_saved_model(path)
    suffix = path.suffix.lower()
    if suffix == ".keras":
        return _load_keras_file(path)
    if suffix in (".h5", ".hdf5"):
        return _load_h5(path)
    if suffix == ".tflite":
        raise ModelLoadError(
            f"{str(path)!r} is already a .tflite file; convert the Keras or SavedModel "
            "source instead (a .tflite file can only be inspected or run)."
        )
    raise ModelLoadError(
        f"Cannot tell what kind of model {str(path)!r} is from its suffix {suffix!r}; "
        "expected a .keras file, an .h5 file or a SavedModel directory."
    )


def _load_keras_file(path: Path) -> Source:
    try:
        with zipfile.ZipFile(path) as zf:
            meta = json.loads(zf.read("metadata.json")) if "metadata.json" in zf.namelist() else {}
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise ModelLoadError(
            f"{str(path)!r} is not a Keras model archive ({_first_line(e)}); a .keras file is "
            "a zip written by `model.save('name.keras')`."
        ) from e
    version = str(meta.get("keras_version", "3"))
    try:
        if version.startswith("2."):
            import tf_keras

            model = tf_keras.models.load_model(path, compile=False)
        else:
            import keras

            model = keras.saving.load_model(path, compile=False)
    except Exception as e:  # noqa: BLE001 - Keras raises many types for bad files
        raise ModelLoadError(
            f"Could not load the Keras model in {str(path)!r}: {_first_line(e)}"
        ) from e
    return _from_keras(model)


def _load_h5(path: Path) -> Source:
    try:
        import h5py

        with h5py.File(path, "r") as f:
            version = f.attrs.get("keras_version", b"2")
            if isinstance(version, bytes):
                version = version.decode()
            if "model_config" not in f.attrs:
                raise ModelLoadError(
                    f"{str(path)!r} is an HDF5 file without a model config (weights only?); "
                    "save the whole model with `model.save('name.h5')`."
                )
    except ModelLoadError:
        raise
    except Exception as e:  # noqa: BLE001 - h5py raises OSError and others
        raise ModelLoadError(
            f"{str(path)!r} is not an HDF5 model file ({_first_line(e)})."
        ) from e
    try:
        if str(version).startswith("3."):
            import keras

            model = keras.saving.load_model(path, compile=False)
        else:
            import tf_keras

            model = tf_keras.models.load_model(path, compile=False)
    except Exception as e:  # noqa: BLE001
        raise ModelLoadError(
            f"Could not load the Keras model in {str(path)!r}: {_first_line(e)}"
        ) from e
    return _from_keras(model)


def _load_saved_model(path: Path) -> Source:
    if not (path / "saved_model.pb").exists() and not (path / "saved_model.pbtxt").exists():
        raise ModelLoadError(
            f"{str(path)!r} is a directory without saved_model.pb, so not a SavedModel; "
            "pass a SavedModel directory or a .keras/.h5 file."
        )
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as e:  # noqa: BLE001
        raise ModelLoadError(f"Could not load the SavedModel {str(path)!r}: {_first_line(e)}") from e
    signatures = dict(loaded.signatures)
    if not signatures:
        raise UnsupportedModelError(
            f"The SavedModel {str(path)!r} has no signatures; export it with a serving "
            "signature (e.g. `model.export(dir)` or `tf.saved_model.save(m, dir, signatures=...)`)."
        )
    key = _SIGNATURE_KEY if _SIGNATURE_KEY in signatures else sorted(signatures)[0]
    fn = signatures[key]
    kw = fn.structured_input_signature[1]
    names = list(getattr(fn, "_arg_keywords", None) or sorted(kw))
    specs = [
        InputSpec(
            n,
            tuple(None if d is None else int(d) for d in kw[n].shape.as_list()),
            _np_dtype(kw[n].dtype),
        )
        for n in names
    ]
    out_names = sorted(fn.structured_outputs)

    def call(xs: list[Any]) -> dict[str, Any]:
        out = fn(**dict(zip(names, xs, strict=False)))
        return {k: out[k] for k in out_names}

    src = Source(
        kind="saved_model",
        description=f"SavedModel {str(path)!r}",
        inputs=specs,
        output_names=out_names,
        _call=call,
        _variables=list(getattr(loaded, "variables", []) or []),
        _saved_model_dir=str(path) if key == _SIGNATURE_KEY else None,
        _keepalive=loaded,
    )
    return src
