"""Runs one `.tflite` on LiteRT's CPU and GPU accelerators and saves both outputs.

Executed as a script (``python _gpu_child.py REQUEST.json``) by
`converters.gpu.run_on_gpu`, in an environment that points the Vulkan loader
at the software device: a native crash of the GPU accelerator kills this
process, not the caller. Imports only numpy and `ai_edge_litert`.

The request holds `model`, `inputs` (an .npz with `x0`, `x1`, ...),
`outputs` (the .npz to write, `cpu0`, `gpu0`, ...) and `runs`. The reply
follows `converters._child` (loaded by path): a failing accelerator is the
error of kind `"cpu"` or `"gpu"`.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

_child = None  # converters/_child.py, loaded by path in `main`


def _compiled(path: str, accel):
    from ai_edge_litert.compiled_model import CompiledModel

    t0 = time.perf_counter()
    model = CompiledModel.from_file(path, hardware_accel=accel)
    return model, (time.perf_counter() - t0) * 1e3


def _run(model, arrays: list, runs: int) -> tuple[list, list]:
    import numpy as np

    sig = list(model.get_signature_list())[0]
    outs = model.get_output_tensor_details(sig)
    ins = model.get_input_tensor_details(sig)
    in_bufs = model.create_input_buffers(0)
    out_bufs = model.create_output_buffers(0)
    for buf, a, d in zip(in_bufs, arrays, ins.values(), strict=True):
        buf.write(np.ascontiguousarray(a, dtype=np.dtype(d["dtype"])))
    shapes = [[int(s) for s in d["shape"]] for d in outs.values()]
    dtypes = [np.dtype(d["dtype"]) for d in outs.values()]

    def read() -> list:
        return [
            buf.read(int(np.prod(shape)) if shape else 1, dtype).reshape(shape)
            for buf, shape, dtype in zip(out_bufs, shapes, dtypes, strict=True)
        ]

    # The GPU accelerator runs asynchronously: `run_by_index` returns once the
    # work is queued. Each sample therefore includes reading the outputs back,
    # which waits for the work to finish.
    times = []
    results = []
    for _ in range(max(runs, 1)):
        t0 = time.perf_counter()
        model.run_by_index(0, in_bufs, out_bufs)
        results = read()
        times.append((time.perf_counter() - t0) * 1e3)
    return results, times


def _handle(req: dict) -> dict:
    import numpy as np
    from ai_edge_litert.hardware_accelerator import HardwareAccelerator

    with np.load(req["inputs"]) as data:
        arrays = [data[f"x{i}"] for i in range(len(data.files))]
    out: dict = {}
    saved = {}
    try:
        cpu, cpu_init = _compiled(req["model"], HardwareAccelerator.CPU)
        cpu_out, cpu_times = _run(cpu, arrays, int(req.get("runs", 3)))
        saved.update({f"cpu{i}": a for i, a in enumerate(cpu_out)})
        out["cpu_ms"] = statistics.median(cpu_times)
    except Exception as e:  # noqa: BLE001 - reported to the caller
        out["error"] = ("cpu", f"{type(e).__name__}: {e}")
    if "error" not in out:
        try:
            # GPU with the CPU allowed: ops the GPU does not take fall back, and
            # the accelerator logs which ones (parsed by the caller).
            gpu, gpu_init = _compiled(
                req["model"], HardwareAccelerator.GPU | HardwareAccelerator.CPU
            )
            out["fully_accelerated"] = bool(gpu.is_fully_accelerated())
            out["gpu_init_ms"] = gpu_init
            gpu_out, gpu_times = _run(gpu, arrays, int(req.get("runs", 3)))
            saved.update({f"gpu{i}": a for i, a in enumerate(gpu_out)})
            out["gpu_ms"] = statistics.median(gpu_times)
        except Exception as e:  # noqa: BLE001 - reported to the caller
            out["error"] = ("gpu", f"{type(e).__name__}: {e}")
    if saved:
        tmp = req["outputs"] + ".part.npz"
        np.savez(tmp, **saved)
        os.replace(tmp, req["outputs"])
    if "error" in out:
        raise _child.ChildError(*out["error"])
    return out


def main(argv: list[str]) -> int:
    global _child
    _child = _load_child()
    return _child.serve(_handle, argv, what="the GPU child")


def _load_child():
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_child.py")
    spec = importlib.util.spec_from_file_location("converters_child", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


if __name__ == "__main__":
    sys.exit(main(sys.argv))
