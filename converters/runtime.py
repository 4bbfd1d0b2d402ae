"""Running a `.tflite` model in LiteRT from numpy, with quantization handled.

`TFLiteModel` verifies the flatbuffer first (see `converters.verify`), then
loads it in `ai_edge_litert`'s interpreter. `predict` takes float inputs for any
model: inputs of integer-quantized models are quantized with the model's own
scale and zero point, outputs are dequantized, and any number of samples is
run in batches (one by one for models with a fixed batch size).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from converters.errors import InvalidTFLiteError, RepresentativeDataError
from converters.verify import verify_tflite

__all__ = ["TFLiteModel"]

_started: list[bool] = []


def _first_interpreter() -> Any:
    """`quiet_start_up` around the process's first interpreter; nothing afterwards."""
    import contextlib

    from converters._native_log import quiet_start_up

    if _started:
        return contextlib.nullcontext()
    _started.append(True)
    return quiet_start_up()


def _quant_params(detail: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    q = detail.get("quantization_parameters") or {}
    scales = np.asarray(q.get("scales", []), np.float64)
    zps = np.asarray(q.get("zero_points", []), np.float64)
    if scales.size == 0 or not np.any(scales):
        return None
    return scales, zps if zps.size else np.zeros_like(scales)


class TFLiteModel:
    """A verified `.tflite` model loaded in LiteRT.

    Args:
      path_or_bytes: a path to a `.tflite` file or its bytes.
      num_threads: CPU threads for the interpreter (LiteRT's default if None).

    Attributes:
      content: the flatbuffer bytes.
      xnnpack: False if the XNNPACK delegate refused the graph and LiteRT's
        builtin kernels run it instead.
      input_details: LiteRT's details of each input, in the model's input order.
      output_details: LiteRT's details of each output, in the model's output order.

    Raises:
      InvalidTFLiteError: the file is missing or not a well-formed `.tflite` model,
        or LiteRT cannot run it on this machine.

    Example:
      >>> model = TFLiteModel("model.tflite")
      >>> probs = model.predict(x_test, batch_size=64)
    """

    def __init__(
        self,
        path_or_bytes: str | os.PathLike | bytes | bytearray,
        *,
        num_threads: int | None = None,
        _trusted: bool = False,
    ) -> None:
        if num_threads is not None and (not isinstance(num_threads, int) or num_threads < 1):
            raise ValueError(f"`num_threads` must be a positive int or None, got {num_threads!r}.")
        if _trusted:
            content = bytes(path_or_bytes)  # type: ignore[arg-type]
        else:
            verified = verify_tflite(path_or_bytes)
            if verified.load_error:
                raise InvalidTFLiteError(
                    f"LiteRT cannot run {verified.source}: {verified.load_error}"
                )
            content = verified.content
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        self.content = content
        self.num_threads = num_threads
        self.xnnpack = True
        try:
            # LiteRT announces its XNNPACK delegate once per process, on stderr.
            with _first_interpreter():
                self._interpreter = Interpreter(model_content=content, num_threads=num_threads)
                self._interpreter.allocate_tensors()
        except (RuntimeError, ValueError) as first:
            # XNNPACK refuses some valid graphs (e.g. sparse int8 fully-connected
            # layers); LiteRT's builtin kernels still run them.
            try:
                self._interpreter = Interpreter(
                    model_content=content,
                    num_threads=num_threads,
                    experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
                )
                self._interpreter.allocate_tensors()
            except (RuntimeError, ValueError) as e:
                raise InvalidTFLiteError(
                    f"LiteRT cannot run this model: {str(e).strip() or first}"
                ) from e
            self.xnnpack = False
        self.input_details = self._interpreter.get_input_details()
        self.output_details = self._interpreter.get_output_details()
        self._signature = self._read_signature()

    def _read_signature(self) -> dict[str, dict[str, int]] | None:
        sigs = self._interpreter.get_signature_list()
        if len(sigs) != 1:
            return None
        key = next(iter(sigs))
        runner = self._interpreter.get_signature_runner(key)
        return {
            "inputs": {n: d["index"] for n, d in runner.get_input_details().items()},
            "outputs": {n: d["index"] for n, d in runner.get_output_details().items()},
        }

    @property
    def input_names(self) -> list[str]:
        """Signature names of the inputs (tensor names if the model has no signature)."""
        return self._names("inputs", self.input_details)

    @property
    def output_names(self) -> list[str]:
        """Signature names of the outputs (tensor names if the model has no signature)."""
        return self._names("outputs", self.output_details)

    def _names(self, kind: str, details: list[dict[str, Any]]) -> list[str]:
        if self._signature is None:
            return [d["name"] for d in details]
        by_index = {i: n for n, i in self._signature[kind].items()}
        return [by_index.get(d["index"], d["name"]) for d in details]

    def predict(
        self,
        x: np.ndarray | Sequence[np.ndarray] | Mapping[str, np.ndarray],
        *,
        batch_size: int = 32,
    ) -> np.ndarray | list[np.ndarray]:
        """Runs the model on samples and returns float outputs.

        Args:
          x: one array (single-input models), a list of arrays in input order,
            or a dict keyed by input name; samples along the first axis.
            Float inputs of integer-quantized models are quantized with the
            model's scale and zero point; integer arrays are passed as they are.
          batch_size: samples per interpreter call for models with a free batch
            dimension.

        Returns:
          One float32 array (single-output models) or a list of them, in
          output order; quantized outputs are dequantized.

        Raises:
          RepresentativeDataError: the inputs do not match the model's.
        """
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive int, got {batch_size!r}.")
        arrays = self._arrange(x)
        n = arrays[0].shape[0]
        outs: list[list[np.ndarray]] = [[] for _ in self.output_details]
        fixed = [int(d["shape_signature"][0]) != -1 for d in self.input_details]
        step = int(self.input_details[0]["shape"][0]) if all(fixed) else batch_size
        step = max(step, 1)
        for start in range(0, n, step):
            chunk = [a[start : start + step] for a in arrays]
            real = chunk[0].shape[0]
            if all(fixed) and real < step:
                chunk = [np.concatenate([c, np.repeat(c[-1:], step - real, 0)]) for c in chunk]
            for i, y in enumerate(self._run(chunk)):
                outs[i].append(y[:real])
        results = [np.concatenate(o, axis=0) for o in outs]
        return results[0] if len(results) == 1 else results

    def _arrange(self, x: Any) -> list[np.ndarray]:
        details = self.input_details
        if isinstance(x, Mapping):
            names = self.input_names
            missing = [n for n in names if n not in x]
            if missing:
                raise RepresentativeDataError(
                    f"Inputs given as a dict need the keys {names}; missing {missing}."
                )
            arrays = [np.asarray(x[n]) for n in names]
        elif isinstance(x, (list, tuple)) and len(details) > 1:
            arrays = [np.asarray(a) for a in x]
        else:
            arrays = [np.asarray(x)]
        if len(arrays) != len(details):
            raise RepresentativeDataError(
                f"The model has {len(details)} inputs ({', '.join(self.input_names)}) but "
                f"{len(arrays)} array(s) were given."
            )
        n = None
        for a, d in zip(arrays, details, strict=False):
            want = [int(v) for v in d["shape_signature"]]
            if a.ndim != len(want):
                raise RepresentativeDataError(
                    f"Input {d['name']!r} expects arrays of shape {tuple(want)} (-1: any), "
                    f"got {a.shape}."
                )
            for got, w in zip(a.shape[1:], want[1:], strict=False):
                if w != -1 and got != w:
                    raise RepresentativeDataError(
                        f"Input {d['name']!r} expects arrays of shape {tuple(want)} (-1: any), "
                        f"got {a.shape}."
                    )
            if n is None:
                n = a.shape[0]
            elif a.shape[0] != n:
                raise RepresentativeDataError(
                    f"The input arrays hold different numbers of samples ({n} and {a.shape[0]})."
                )
        if not n:
            raise RepresentativeDataError("No samples to run (the first axis is empty).")
        return arrays

    def _feed(self, a: np.ndarray, d: Mapping[str, Any]) -> np.ndarray:
        dtype = np.dtype(d["dtype"])
        if np.issubdtype(dtype, np.integer) and np.issubdtype(a.dtype, np.floating):
            q = _quant_params(d)
            if q is None:
                return a.astype(dtype)
            scale, zp = q
            info = np.iinfo(dtype)
            return np.clip(np.round(a / scale + zp), info.min, info.max).astype(dtype)
        return a.astype(dtype, copy=False)

    def _run(self, chunk: list[np.ndarray]) -> list[np.ndarray]:
        it = self._interpreter
        resized = False
        for a, d in zip(chunk, self.input_details, strict=False):
            if tuple(d["shape"]) != a.shape:
                it.resize_tensor_input(d["index"], list(a.shape))
                resized = True
        if resized:
            it.allocate_tensors()
            self.input_details = it.get_input_details()
            self.output_details = it.get_output_details()
        for a, d in zip(chunk, self.input_details, strict=False):
            it.set_tensor(d["index"], self._feed(a, d))
        it.invoke()
        outs = []
        for d in self.output_details:
            y = it.get_tensor(d["index"])
            q = _quant_params(d)
            if q is not None and np.issubdtype(y.dtype, np.integer):
                scale, zp = q
                y = ((y.astype(np.float64) - zp) * scale).astype(np.float32)
            elif not np.issubdtype(y.dtype, np.floating):
                y = y.astype(np.float32)
            outs.append(y)
        return outs
