"""Runs one benchmark of a `.tflite` file in a clean process and prints JSON.

This file is executed as a script (``python child.py REQUEST.json``),
never imported by the caller, so that:

* a crash of the runtime on a bad file kills this process, not the caller's;
* the peak memory it reports belongs to the inference alone (no TensorFlow or
  Keras is imported here, only numpy and `ai_edge_litert`);
* the same file runs unchanged under the emulated AArch64 Python (it uses only
  the standard library, numpy, `ai_edge_litert` and the numpy-only
  `converters/_random_inputs.py`, loaded by path).

The timing loop measures what LiteRT's ``benchmark_litert_model`` measures:
inputs are written once before the warm-up, and each sample is
``time.perf_counter()`` around one invoke alone (no input copy, no output
read, no allocation), with one thread and XNNPACK by default. The one
deliberate difference is the API on the CPU: the classic `Interpreter` (with
its default XNNPACK delegate) rather than `CompiledModel`, because only the
interpreter can switch XNNPACK off, load an external delegate and list the
delegated ops; both hand the graph
to the same XNNPACK kernels (measured: minimum latencies within 3 % on
MobileNetV2 fp32 and int8, see ``benchmarks/bench_agreement.py``).

The request is a JSON object (see `tflight.benchmark` for the fields); the
request file, the reply line and the errors follow `converters/_child.py`
(loaded by path, like `converters/_random_inputs.py`). Errors that the caller
should report as the user's mistake are replies of kind `InputDataError` or
`AcceleratorUnavailable`; a bug of ours is an `InternalError` whose traceback
is written to a file.
"""

from __future__ import annotations

import os
import sys
import time

__all__ = ["main"]

_CONVERTERS = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "converters"
)


def _load_child():
    """`converters/_child.py` (standard library only), loaded by path."""
    import importlib.util

    name = "converters_child"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, os.path.join(_CONVERTERS, "_child.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


_child = _load_child()
_UserError = _child.ChildError


def _memory_kib() -> dict:
    """Current and peak resident set size of this process, in KiB."""
    out = {"rss_kib": None, "hwm_kib": None}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    out["rss_kib"] = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    out["hwm_kib"] = int(line.split()[1])
    except OSError:
        import resource

        out["hwm_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return out


def _litert_ranges() -> list:
    """Executable address ranges of LiteRT's libraries in this process."""
    ranges = []
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 6 and "x" in parts[1] and "ai_edge_litert" in parts[5]:
                    lo, hi = parts[0].split("-")
                    ranges.append([int(lo, 16), int(hi, 16), parts[5]])
    except OSError:
        pass
    return ranges


def _marker(name: str) -> None:
    try:
        os.stat(f"/@@tflight-invokes-{name}@@")
    except OSError:
        pass


def _reset_peak() -> bool:
    """Resets the kernel's peak-RSS counter so later peaks are the model's own."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _load_interpreter(req: dict):
    from ai_edge_litert import interpreter as litert

    kwargs = {"model_path": req["model"]}
    if req.get("threads") is not None:
        kwargs["num_threads"] = int(req["threads"])
    if not req.get("xnnpack", True):
        kwargs["experimental_op_resolver_type"] = (
            litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        )
    delegate = req.get("delegate")
    if delegate:
        try:
            loaded = litert.load_delegate(delegate["library"], delegate.get("options") or {})
        except Exception as e:  # noqa: BLE001 - a missing symbol is an AttributeError
            raise _UserError(
                "DelegateError",
                f"could not load the delegate library {delegate['library']!r}: "
                f"{str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}. "
                "Pass the path of a TFLite delegate shared library (one that exports "
                "tflite_plugin_create_delegate), or drop the delegate option to run on the CPU.",
            ) from e
        kwargs["experimental_delegates"] = [loaded]
    try:
        interp = litert.Interpreter(**kwargs)
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise _UserError(
            "InvalidModel",
            f"LiteRT could not load {req['model']!r}: {str(e).strip().splitlines()[0]}",
        ) from e
    return interp


class _InterpreterRunner:
    """Feeds inputs, invokes and reads outputs through the classic interpreter API."""

    def __init__(self, req: dict):
        t0 = time.perf_counter()
        self.interp = _load_interpreter(req)
        self.init_ms = (time.perf_counter() - t0) * 1e3
        self.inputs = self.interp.get_input_details()
        self.outputs = self.interp.get_output_details()

    def set_inputs(self, arrays: list) -> None:
        for d, a in zip(self.inputs, arrays, strict=True):
            self.interp.set_tensor(d["index"], a)

    def invoke(self) -> None:
        self.interp.invoke()

    def get_outputs(self) -> list:
        return [self.interp.get_tensor(d["index"]) for d in self.outputs]

    def ops(self) -> list:
        try:
            return self.interp._get_ops_details()
        except Exception:  # noqa: BLE001 - private API, absent in some versions
            return []


class _CompiledRunner:
    """The same protocol on `CompiledModel`, for the GPU and NPU accelerators.

    The accelerator is asked for together with the CPU, so that ops it does
    not take fall back (and the accelerator logs which ones). The GPU
    accelerator runs asynchronously, so each invoke also reads the outputs
    back, which waits for the work to finish.
    """

    def __init__(self, req: dict):
        import numpy as np
        from ai_edge_litert import interpreter as litert
        from ai_edge_litert.compiled_model import CompiledModel
        from ai_edge_litert.hardware_accelerator import HardwareAccelerator

        accel = {"gpu": HardwareAccelerator.GPU, "npu": HardwareAccelerator.NPU}[
            req["accelerator"]
        ]
        # Quantization parameters, which CompiledModel's details do not carry.
        plain = litert.Interpreter(model_path=req["model"])
        in_q = [d["quantization"] for d in plain.get_input_details()]
        out_q = [d["quantization"] for d in plain.get_output_details()]
        del plain
        t0 = time.perf_counter()
        try:
            self.model = CompiledModel.from_file(
                req["model"], hardware_accel=accel | HardwareAccelerator.CPU
            )
        except RuntimeError as e:
            lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
            raise _UserError(
                "AcceleratorUnavailable",
                f"the {req['accelerator'].upper()} accelerator of LiteRT is not available here "
                f"({' '.join(lines)[:300] or 'no reason given'})",
            ) from e
        self.init_ms = (time.perf_counter() - t0) * 1e3
        self.fully_accelerated = bool(self.model.is_fully_accelerated())
        self.sig = list(self.model.get_signature_list())[0]
        self.in_details = self.model.get_input_tensor_details(self.sig)
        self.out_details = self.model.get_output_tensor_details(self.sig)
        self.in_bufs = self.model.create_input_buffers(0)
        self.out_bufs = self.model.create_output_buffers(0)
        self.inputs = [
            {"name": n, "shape": np.array(d["shape"]), "dtype": np.dtype(d["dtype"]),
             "quantization": tuple(q)}
            for (n, d), q in zip(self.in_details.items(), in_q, strict=True)
        ]
        self.outputs = [
            {"name": n, "shape": np.array(d["shape"]), "dtype": np.dtype(d["dtype"]),
             "quantization": tuple(q)}
            for (n, d), q in zip(self.out_details.items(), out_q, strict=True)
        ]
        self._last: list = []

    def set_inputs(self, arrays: list) -> None:
        for buf, a in zip(self.in_bufs, arrays, strict=True):
            buf.write(a)

    def invoke(self) -> None:
        self.model.run_by_index(0, self.in_bufs, self.out_bufs)
        self._last = self._read()

    def _read(self) -> list:
        import numpy as np

        out = []
        for buf, d in zip(self.out_bufs, self.outputs, strict=True):
            n = int(np.prod(d["shape"]))
            out.append(buf.read(n, d["dtype"]).reshape(d["shape"]))
        return out

    def get_outputs(self) -> list:
        return self._last or self._read()

    def ops(self) -> list:
        return []


def _shared_random(req: dict):
    """`random_array` of `converters/_random_inputs.py`, loaded by path.

    The project draws every random input from that one function; this script
    runs where `converters` cannot be imported (no TensorFlow, or under the
    emulated AArch64 Python), so the numpy-only file is loaded directly.
    """
    path = req.get("random_inputs_module") or os.path.join(_CONVERTERS, "_random_inputs.py")
    return _child.load_by_path(path, "_tflight_random_inputs").random_array


def _random_inputs(details: list, req: dict) -> list:
    """Random inputs of each input's dtype, from the project's one distribution.

    Float inputs are uniform in [-1, 1], as `benchmark_litert_model` fills
    them; quantized inputs span their dtype's range.
    """
    import numpy as np

    random_array = _shared_random(req)
    rng = np.random.default_rng(int(req.get("seed", 0)))
    arrays = []
    for d in details:
        shape = [int(s) if int(s) > 0 else 1 for s in d["shape"]]
        scale = d.get("quantization", (0.0, 0))[0]
        try:
            arrays.append(random_array(rng, shape, d["dtype"], quantized=bool(scale)))
        except TypeError:
            raise _UserError(
                "InputDataError",
                f"cannot make random data for input {d['name']!r} of dtype "
                f"{np.dtype(d['dtype'])}; pass an .npz file with the inputs instead",
            ) from None
    return arrays


def _quantize(a, d):
    import numpy as np

    dtype = np.dtype(d["dtype"])
    scale, zero = d.get("quantization", (0.0, 0))
    if dtype.kind in "iu" and scale and a.dtype.kind == "f":
        info = np.iinfo(dtype)
        return np.clip(np.round(a / scale + zero), info.min, info.max).astype(dtype)
    return a.astype(dtype, copy=False)


def _dequantize(a, d):
    import numpy as np

    scale, zero = d.get("quantization", (0.0, 0))
    if a.dtype.kind in "iu" and scale:
        return (a.astype(np.float32) - zero) * np.float32(scale)
    return a


def _load_npz(path: str, details: list) -> list:
    """Reads the samples for each model input from an .npz; checks their shapes."""
    import numpy as np

    try:
        data = np.load(path, allow_pickle=False)
        keys = list(data.keys())
    except (OSError, ValueError) as e:
        raise _UserError("InputDataError", f"cannot read {path!r} as an .npz file: {e}") from e
    names = [d["name"] for d in details]
    arrays = []
    for i, d in enumerate(details):
        candidates = [d["name"], f"x{i}"] + (["x", "inputs", "arr_0"] if len(details) == 1 else [])
        key = next((k for k in candidates if k in keys), None)
        if key is None:
            raise _UserError(
                "InputDataError",
                f"{path!r} has no array for model input {i} ({d['name']!r}); it holds "
                f"{keys}. Name the array 'x' (one input), 'x{i}' or {d['name']!r}, "
                "and the labels 'y'.",
            )
        a = data[key]
        want = [int(s) for s in d["shape"]][1:]
        if list(a.shape[1:]) != want and list(a.shape) == want:
            a = a[None]
        if a.ndim != len(want) + 1 or [int(s) for s in a.shape[1:]] != want:
            raise _UserError(
                "InputDataError",
                f"array {key!r} in {path!r} has shape {tuple(a.shape)}, but model input "
                f"{d['name']!r} takes samples of shape {tuple(want)}: pass an array of "
                f"shape (n, {', '.join(str(s) for s in want)})",
            )
        if a.dtype.kind not in "fiub":
            raise _UserError(
                "InputDataError", f"array {key!r} in {path!r} has unsupported dtype {a.dtype}"
            )
        arrays.append(a)
    n = {len(a) for a in arrays}
    if len(n) != 1:
        raise _UserError(
            "InputDataError",
            f"the input arrays in {path!r} hold different numbers of samples: {sorted(n)} "
            f"(inputs {names})",
        )
    return arrays


def _batches(arrays: list, details: list):
    """Yields per-invoke input lists at the model's own batch size."""
    batch = max(int(details[0]["shape"][0]), 1) if len(details[0]["shape"]) else 1
    n = len(arrays[0])
    for start in range(0, n, batch):
        chunk = [a[start : start + batch] for a in arrays]
        real = len(chunk[0])
        if real < batch:
            chunk = [
                __import__("numpy").concatenate([c, c[-1:].repeat(batch - real, axis=0)])
                for c in chunk
            ]
        yield chunk, real


def _timed_loop(runner, count: int, min_time: float, max_time: float) -> list:
    """Invokes at least `count` times and for at least `min_time` s (capped by `max_time`)."""
    times = []
    perf = time.perf_counter
    invoke = runner.invoke
    start = perf()
    while True:
        t0 = perf()
        invoke()
        times.append((perf() - t0) * 1e3)
        elapsed = perf() - start
        if len(times) >= count and elapsed >= min_time:
            break
        if max_time > 0 and elapsed >= max_time and len(times) >= 1:
            break
    return times


def _run(req: dict) -> dict:
    import numpy as np

    # Load the runtime's native libraries before the baseline, so that the
    # figures below are the model's own and not LiteRT's code.
    from ai_edge_litert import interpreter  # noqa: F401

    t_import = time.perf_counter()
    mem_before = _memory_kib()
    peak_reset = _reset_peak()
    if req.get("accelerator", "cpu") in ("gpu", "npu"):
        runner = _CompiledRunner(req)
        fully = runner.fully_accelerated
    else:
        runner = _InterpreterRunner(req)
        fully = None
    mem_loaded = _memory_kib()
    details = runner.inputs

    samples = None
    if req.get("inputs_npz"):
        samples = _load_npz(req["inputs_npz"], details)
        first, _ = next(_batches(samples, details))
        timing_inputs = [_quantize(a, d) for a, d in zip(first, details, strict=True)]
    else:
        timing_inputs = _random_inputs(details, req)
    runner.set_inputs(timing_inputs)

    t0 = time.perf_counter()
    try:
        runner.invoke()
    except (RuntimeError, ValueError) as e:
        raise _UserError(
            "InvalidModel",
            f"LiteRT could not run {req['model']!r}: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}",
        ) from e
    first_ms = (time.perf_counter() - t0) * 1e3
    warmup = _timed_loop(
        runner,
        int(req.get("warmup_runs", 1)),
        float(req.get("warmup_min_time", 0.0)),
        float(req.get("max_time", 0.0)),
    )
    measured = _timed_loop(
        runner,
        int(req.get("runs", 50)),
        float(req.get("min_time", 1.0)),
        float(req.get("max_time", 0.0)),
    )
    mem_after = _memory_kib()

    result = {
        "runtime_version": _runtime_version(),
        "machine": os.uname().machine,
        "init_ms": runner.init_ms,
        "first_ms": first_ms,
        "warmup_ms": warmup,
        "latencies_ms": measured,
        "memory": {
            "before_load_kib": mem_before["rss_kib"],
            "after_load_kib": mem_loaded["rss_kib"],
            "peak_kib": mem_after["hwm_kib"],
            "peak_is_model_only": peak_reset,
        },
        "inputs": [
            {"name": d["name"], "shape": [int(s) for s in d["shape"]], "dtype": str(np.dtype(d["dtype"]))}
            for d in details
        ],
        "outputs": [
            {"name": d["name"], "shape": [int(s) for s in d["shape"]],
             "dtype": str(np.dtype(d["dtype"])),
             "scale": float(d.get("quantization", (0.0, 0))[0])}
            for d in runner.outputs
        ],
        "fully_accelerated": fully,
        "ops": [
            {"index": int(o["index"]), "op_name": o["op_name"],
             "inputs": [int(i) for i in o["inputs"]], "outputs": [int(i) for i in o["outputs"]]}
            for o in runner.ops()
        ],
        "setup_s": t0 - t_import,
    }

    if req.get("report_ranges"):
        result["litert_ranges"] = _litert_ranges()
    if req.get("inputs_save"):
        tmp = req["inputs_save"] + ".part.npz"
        np.savez(tmp, **{f"x{i}": a for i, a in enumerate(timing_inputs)})
        os.replace(tmp, req["inputs_save"])
    if req.get("extra_invokes"):
        # The failing stat calls are markers: an emulator that logs system
        # calls sees exactly where the extra invokes begin and end.
        _marker("begin")
        for _ in range(int(req["extra_invokes"])):
            runner.invoke()
        _marker("end")

    if req.get("outputs_path"):
        if samples is not None:
            collected = [[] for _ in runner.outputs]
            for chunk, real in _batches(samples, details):
                runner.set_inputs([_quantize(a, d) for a, d in zip(chunk, details, strict=True)])
                runner.invoke()
                for i, (o, d) in enumerate(zip(runner.get_outputs(), runner.outputs, strict=True)):
                    collected[i].append(np.asarray(_dequantize(o, d))[:real])
            outs = [np.concatenate(c) for c in collected]
        else:
            runner.set_inputs(timing_inputs)
            runner.invoke()
            outs = [
                np.asarray(_dequantize(o, d))
                for o, d in zip(runner.get_outputs(), runner.outputs, strict=True)
            ]
        tmp = req["outputs_path"] + ".part.npz"
        np.savez(tmp, **{f"out{i}": o for i, o in enumerate(outs)})
        os.replace(tmp, req["outputs_path"])
    return result


def _runtime_version() -> str:
    try:
        from importlib.metadata import version

        return "ai-edge-litert " + version("ai-edge-litert")
    except Exception:  # noqa: BLE001 - metadata may be missing in an unpacked site dir
        return "ai-edge-litert (unknown version)"


def _profile_prefixes(req: dict) -> dict:
    """Median latency of each prefix model (the first k ops of the graph), in order."""
    import statistics

    medians = []
    for path in req["prefix_models"]:
        sub = dict(req, model=path)
        runner = _InterpreterRunner(sub)
        runner.set_inputs(_random_inputs(runner.inputs, req))
        runner.invoke()
        times = _timed_loop(
            runner,
            int(req.get("runs", 20)),
            float(req.get("min_time", 0.05)),
            float(req.get("max_time", 0.0)),
        )
        medians.append(statistics.median(times))
        del runner
    return {"prefix_medians_ms": medians}


def _handle(req: dict) -> dict:
    return _profile_prefixes(req) if req.get("prefix_models") else _run(req)


def main(argv: list[str]) -> int:
    return _child.serve(
        _handle, argv, what="the benchmark child", traceback_prefix="tflight-internal-"
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv))
