"""LiteRT's real GPU accelerator, run on a software Vulkan device.

ai-edge-litert 2.3.0 ships a GPU accelerator built on WebGPU (Dawn over
Vulkan). Dawn accepts Mesa's software rasteriser `llvmpipe` as a Vulkan
adapter from Mesa 23 on (Debian bookworm's Mesa 22 lacks
`shaderUniform*ArrayDynamicIndexing`), so a machine without a GPU can run
the accelerator's real kernels: delegation, shader compilation and fp16
arithmetic are those a phone's GPU path runs; the timing is not (the shaders
run on the CPU).

`setup_gpu` fetches `mesa-vulkan-drivers` (Mesa 25) and `libvulkan1` from
Debian bookworm-backports into a private folder (nothing is installed
system-wide; see `converters._debian`) and `run_on_gpu` runs a model on the
CPU and GPU accelerators in a child process pointed at that folder, and
compares the two outputs.

References:
  LiteRT GPU acceleration, https://ai.google.dev/edge/litert/performance/gpu
  Mesa llvmpipe, https://docs.mesa3d.org/drivers/llvmpipe.html
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from converters import _child, _debian
from converters.errors import ConversionError, ValidationError

__all__ = [
    "GPU_PACKAGES",
    "TIMING_LABEL",
    "GpuUnavailableError",
    "VulkanEnvironment",
    "GpuRun",
    "compare_gpu_outputs",
    "parse_fallback",
    "selected_adapter",
    "default_gpu_cache_dir",
    "setup_gpu",
    "run_on_gpu",
    "gpu_target_check",
]

GPU_PACKAGES = ("mesa-vulkan-drivers", "libvulkan1")
_RELEASE = "bookworm-backports"
_MIN_MESA = 23
CACHE_ENV = _debian.CACHE_ENV
TIMING_LABEL = "software Vulkan (llvmpipe), not GPU timing; each run includes reading the outputs back"
_CHILD = Path(__file__).with_name("_gpu_child.py")
_ADAPTER = re.compile(r"Selected adapter: (.*?)(?:, arch=|$)", re.M)


class GpuUnavailableError(ConversionError):
    """No Vulkan device for LiteRT's GPU accelerator could be set up or found."""


def default_gpu_cache_dir() -> Path:
    """`$TFLIGHT_CACHE_DIR/vulkan`, or `~/.cache/tflight/vulkan`."""
    return _debian.cache_dir("vulkan")


@dataclasses.dataclass(frozen=True)
class VulkanEnvironment:
    """A private Mesa (llvmpipe) Vulkan driver and loader.

    Attributes:
      root: the unpacked packages.
      icd: the Vulkan driver manifest naming llvmpipe.
      mesa_version: the Debian version of `mesa-vulkan-drivers` unpacked.
    """

    root: Path
    icd: Path
    mesa_version: str

    @property
    def libdirs(self) -> list[Path]:
        return sorted({p.parent for p in self.root.glob("usr/lib/*/libvulkan.so.1")})

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """`base` (default: this process's environment) pointed at this driver."""
        env = dict(os.environ if base is None else base)
        libs = [str(p) for p in self.libdirs]
        if env.get("LD_LIBRARY_PATH"):
            libs.append(env["LD_LIBRARY_PATH"])
        env["LD_LIBRARY_PATH"] = os.pathsep.join(libs)
        env["VK_ICD_FILENAMES"] = str(self.icd)
        env["VK_DRIVER_FILES"] = str(self.icd)
        return env


def setup_gpu(
    *,
    cache_dir: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
    force: bool = False,
) -> VulkanEnvironment:
    """Returns a software Vulkan device for LiteRT's GPU accelerator, setting it up once.

    Downloads about 60 MB of Debian packages (Mesa 25's `mesa-vulkan-drivers`
    and `libvulkan1` from bookworm-backports, with their libraries), unpacks
    them under `cache_dir` and checks that LiteRT's GPU accelerator selects
    llvmpipe and runs a small model fully accelerated. Works on Debian and
    Ubuntu hosts (see `converters._debian`); nothing is installed system-wide.

    Args:
      cache_dir: where to keep it; defaults to `default_gpu_cache_dir()`.
      progress: called with one line per step; None is silent.
      force: rebuild even if a finished set-up is cached.

    Returns:
      A `VulkanEnvironment`.

    Raises:
      GpuUnavailableError: the set-up failed; the message names the step.

    Example:
      >>> env = setup_gpu(progress=print)
    """
    final = Path(cache_dir).expanduser() if cache_dir is not None else default_gpu_cache_dir()
    marker = final / "ready.json"
    if marker.exists() and not force:
        return _load_marker(marker)
    if platform.system() != "Linux":
        raise GpuUnavailableError(
            f"the software Vulkan device is set up from Debian packages on Linux; this is "
            f"{platform.system()}"
        )
    built = _debian.install_once(
        final, lambda work: _build(work, progress),
        ready=lambda f: (f / "ready.json").exists() and not force,
    )
    if not built:
        return _load_marker(marker)
    env = _load_marker(marker)
    _say(progress, "[gpu] checking LiteRT's GPU accelerator on llvmpipe")
    try:
        _smoke(env)
    except BaseException:
        marker.unlink(missing_ok=True)
        raise
    return env


def _say(progress: Callable[[str], None] | None, msg: str) -> None:
    if progress is not None:
        progress(msg)


def _build(work: Path, progress: Callable[[str], None] | None) -> None:
    t0 = time.monotonic()
    try:
        arch = _debian.run(["dpkg", "--print-architecture"], "dpkg --print-architecture").strip()
        apt = _debian.PrivateApt(work / "apt", (arch,))
        _say(progress, f"[gpu 1/3] reading Debian's package index (bookworm + backports, {arch})")
        apt.update()
        pins = [
            p for p in apt.closure(GPU_PACKAGES, release=_RELEASE)
            if _debian.package_name(p) not in _debian.HOST_RUNTIME
        ]
        mesa = next((p.split("=", 1)[1] for p in pins if p.startswith("mesa-vulkan-drivers")), "")
        major = int(re.match(r"(?:\d+:)?(\d+)", mesa).group(1)) if mesa else 0
        if major < _MIN_MESA:
            raise GpuUnavailableError(
                f"{_RELEASE} offers mesa-vulkan-drivers {mesa or 'nothing'}; LiteRT's GPU "
                f"accelerator needs Mesa >= {_MIN_MESA} (Dawn rejects older llvmpipe)"
            )
        _say(progress, f"[gpu 2/3] downloading {len(pins)} packages (Mesa {mesa})")
        debs = apt.download(pins, work / "debs")
        _say(progress, "[gpu 3/3] unpacking")
        _debian.unpack(debs, work / "root")
    except _debian.DebianFetchError as e:
        raise GpuUnavailableError(f"could not set up the software Vulkan device: {e}") from e
    for sub in ("debs", "apt", "root/usr/share/doc", "root/usr/share/man"):
        shutil.rmtree(work / sub, ignore_errors=True)
    manifests = sorted((work / "root" / "usr" / "share" / "vulkan" / "icd.d").glob("lvp_icd*.json"))
    libs = sorted((work / "root").glob("usr/lib/*/libvulkan_lvp.so"))
    if not manifests or not libs:
        raise GpuUnavailableError("mesa-vulkan-drivers holds no llvmpipe driver (lvp_icd.json)")
    icd = json.loads(manifests[0].read_text())
    # A path with a slash is read relative to the manifest: the folder can move.
    icd["ICD"]["library_path"] = "./" + str(libs[0].relative_to(work))
    (work / "lvp_icd.json").write_text(json.dumps(icd, indent=1))
    (work / "ready.json").write_text(
        json.dumps(
            {"root": "root", "icd": "lvp_icd.json", "mesa_version": mesa,
             "setup_s": round(time.monotonic() - t0, 1)},
            indent=1,
        )
    )


def _load_marker(marker: Path) -> VulkanEnvironment:
    base = marker.parent
    try:
        info = json.loads(marker.read_text())
        env = VulkanEnvironment(
            root=base / info["root"], icd=base / info["icd"], mesa_version=info["mesa_version"]
        )
    except (OSError, ValueError, KeyError) as e:
        raise GpuUnavailableError(
            f"the cached Vulkan set-up at {base} is damaged ({e}); delete it to rebuild"
        ) from e
    if not (env.icd.is_file() and env.libdirs):
        raise GpuUnavailableError(
            f"the cached Vulkan set-up at {base} is incomplete; delete the folder or call "
            "setup_gpu(force=True)"
        )
    return env


def _tiny_model() -> bytes:
    """A one-op float model (ADD of a (1, 8, 8, 4) input with itself), built from the schema."""
    from converters import flatbuffer

    s = flatbuffer.schema()
    m = s.ModelT()
    m.version = 3
    code = s.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = s.BuiltinOperator.ADD
    code.version = 1
    m.operatorCodes = [code]
    m.buffers = [s.BufferT(), s.BufferT(), s.BufferT()]
    tensors = []
    for i, name in enumerate(("x", "y")):
        t = s.TensorT()
        t.shape = [1, 8, 8, 4]
        t.type = s.TensorType.FLOAT32
        t.buffer = i + 1
        t.name = name
        tensors.append(t)
    op = s.OperatorT()
    op.opcodeIndex = 0
    op.inputs = [0, 0]
    op.outputs = [1]
    op.builtinOptionsType = s.BuiltinOptions.AddOptions
    op.builtinOptions = s.AddOptionsT()
    sg = s.SubGraphT()
    sg.tensors = tensors
    sg.inputs = [0]
    sg.outputs = [1]
    sg.operators = [op]
    sg.name = "main"
    m.subgraphs = [sg]
    m.description = "tflight vulkan check"
    return flatbuffer.build(m, size_hint=256)


def _smoke(env: VulkanEnvironment) -> None:
    run = run_on_gpu(_tiny_model(), env=env, runs=1, timeout=300)
    if not run.fully_accelerated:
        raise GpuUnavailableError(
            "LiteRT's GPU accelerator did not take a one-op ADD model on llvmpipe "
            f"(adapter: {run.adapter or 'none'})"
        )
    if not run.passed:
        raise GpuUnavailableError(
            f"LiteRT's GPU accelerator gave wrong results on llvmpipe: {'; '.join(run.failures)}"
        )


@dataclasses.dataclass(frozen=True)
class GpuRun:
    """One model run on LiteRT's CPU and GPU accelerators, outputs compared.

    Attributes:
      fully_accelerated: LiteRT's `CompiledModel.is_fully_accelerated()` on the
        GPU: True when every op was delegated.
      fallback: the ops the GPU accelerator did not take, with its reason
        (`"GATHER: Only support 1D indices"`), read from its log: the Python
        API of ai-edge-litert 2.3.0 gives no per-op placement.
      partitions: per delegated graph, (ops on the GPU, ops on the CPU), from
        the same log; empty when every op went to the GPU.
      adapter: the Vulkan adapter the accelerator selected (from its log).
      max_abs_diff: largest |GPU - CPU| over all outputs.
      snr_db: signal-to-noise ratio of the GPU outputs against the CPU's.
      min_snr_db: the bound `passed` requires.
      failures: one sentence per problem (NaN, all zeros, SNR too low).
      cpu_ms: median CPU-accelerator latency.
      gpu_ms: median GPU-accelerator latency on the software device.
      timing_note: what `gpu_ms` is (`TIMING_LABEL`).
      outputs: the GPU outputs.
    """

    fully_accelerated: bool
    fallback: tuple[str, ...]
    partitions: tuple[tuple[int, int], ...]
    adapter: str
    max_abs_diff: float
    snr_db: float
    min_snr_db: float
    failures: tuple[str, ...]
    cpu_ms: float
    gpu_ms: float
    timing_note: str = TIMING_LABEL
    outputs: tuple[np.ndarray, ...] = ()

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("outputs")
        d["passed"] = self.passed
        return d

    def summary(self, print_fn: Callable[[str], None] = print) -> None:
        placed = describe_placement(self.fully_accelerated, self.partitions)
        print_fn(f"GPU accelerator  {self.adapter or '?'}: {placed}")
        for op in self.fallback:
            print_fn(f"  falls back      {op}")
        verdict = "ok" if self.passed else "FAILED: " + "; ".join(self.failures)
        print_fn(
            f"GPU vs CPU       max |diff| {self.max_abs_diff:.3g}, SNR {self.snr_db:.1f} dB "
            f"(>= {self.min_snr_db:.0f} dB): {verdict}"
        )
        print_fn(
            f"GPU latency      {self.gpu_ms:.3f} ms vs CPU {self.cpu_ms:.3f} ms "
            f"({self.timing_note})"
        )


def compare_gpu_outputs(
    cpu: Sequence[np.ndarray], gpu: Sequence[np.ndarray], *, min_snr_db: float = 30.0
) -> tuple[float, float, list[str]]:
    """Compares GPU outputs with the CPU's: (max |diff|, SNR dB, failures).

    The GPU accelerator computes in fp16 by default, so results differ from
    the CPU's at about 1e-3 relative; `min_snr_db` = 30 dB allows a relative
    RMS error of 3 %. NaN or infinite GPU values where the CPU's are finite,
    and all-zero GPU outputs where the CPU's are not, always fail.
    """
    failures: list[str] = []
    max_diff = 0.0
    noise = signal = 0.0
    for i, (c, g) in enumerate(zip(cpu, gpu, strict=True)):
        c = np.asarray(c, np.float64)
        g = np.asarray(g, np.float64)
        if c.shape != g.shape:
            failures.append(f"output {i}: GPU shape {g.shape} != CPU shape {c.shape}")
            continue
        bad = ~np.isfinite(g) & np.isfinite(c)
        if bad.any():
            failures.append(f"output {i}: {int(bad.sum())} NaN/infinite value(s) on the GPU")
            continue
        if not g.any() and c.any():
            failures.append(f"output {i}: all zeros on the GPU, not on the CPU")
        finite = np.isfinite(c)
        d = np.abs(g - c)[finite]
        if d.size:
            max_diff = max(max_diff, float(d.max()))
        noise += float(np.sum(d**2))
        signal += float(np.sum(c[finite] ** 2))
    if noise == 0.0:
        snr = math.inf
    elif signal == 0.0:
        snr = -math.inf
    else:
        snr = 10.0 * math.log10(signal / noise)
    if snr < min_snr_db and not failures:
        failures.append(
            f"GPU outputs differ from the CPU's: SNR {snr:.1f} dB < {min_snr_db:.0f} dB "
            f"(max |diff| {max_diff:.3g}); fp16 precision loss is too large for this model"
        )
    return max_diff, snr, failures


def _model_inputs(path: str) -> list[dict]:
    from ai_edge_litert import interpreter as litert

    interp = litert.Interpreter(model_path=path)
    return interp.get_input_details()


def run_on_gpu(
    model: bytes | str | os.PathLike,
    *,
    inputs: Sequence[np.ndarray] | None = None,
    env: VulkanEnvironment | None = None,
    runs: int = 3,
    seed: int = 0,
    min_snr_db: float = 30.0,
    timeout: float = 600.0,
    progress: Callable[[str], None] | None = None,
) -> GpuRun:
    """Runs a verified `.tflite` on LiteRT's CPU and GPU accelerators; compares outputs.

    The run happens in a child process whose Vulkan loader sees only the
    software device of `setup_gpu` (set up on first use): a native crash of
    the accelerator is reported, not fatal. A model with free dimensions must
    get fixed ones first: the GPU accelerator takes static shapes only.

    Args:
      model: `.tflite` bytes or path (trusted or verified: LiteRT is native code).
      inputs: one array per model input at its exact shape; by default random
        ones from `converters._random_inputs` (floats uniform in [-1, 1]).
      env: a `VulkanEnvironment`; `setup_gpu(progress=progress)` by default.
      runs: invokes per accelerator (the latencies are their medians).
      seed: seed of the random inputs.
      min_snr_db: the SNR the GPU outputs must reach against the CPU's.
      timeout: seconds the child may take.
      progress: called with one line per slow step.

    Returns:
      A `GpuRun`; check `passed` (or call `raise_if_failed`-style code on
      `failures`).

    Raises:
      GpuUnavailableError: no Vulkan device could be set up, or the
        accelerator refused the model or crashed.
    """
    env = env if env is not None else setup_gpu(progress=progress)
    with tempfile.TemporaryDirectory(prefix="converters-gpu-") as tmp:
        tmpd = Path(tmp)
        path = tmpd / "model.tflite"
        if isinstance(model, (bytes, bytearray)):
            path.write_bytes(bytes(model))
        else:
            shutil.copyfile(model, path)
        if inputs is None:
            from converters._random_inputs import random_array

            rng = np.random.default_rng(seed)
            details = _model_inputs(str(path))
            free = [d["name"] for d in details if any(int(s) < 0 for s in d["shape_signature"])]
            if free:
                raise GpuUnavailableError(
                    f"LiteRT's GPU accelerator takes static shapes only; inputs {free} have free "
                    "dimensions: fix them (e.g. keras.Input(shape, batch_size=1)) and convert again"
                )
            inputs = [
                random_array(rng, d["shape"], d["dtype"], quantized=bool(d["quantization"][0]))
                for d in details
            ]
        np.savez(tmpd / "inputs.npz", **{f"x{i}": np.asarray(a) for i, a in enumerate(inputs)})
        req = {"model": str(path), "inputs": str(tmpd / "inputs.npz"),
               "outputs": str(tmpd / "outputs.npz"), "runs": int(runs)}
        no_adapter = (
            "LiteRT's GPU accelerator found no Vulkan adapter, so nothing ran on it: {}. Run "
            "converters.gpu.setup_gpu(force=True) to rebuild the software Vulkan device"
        )
        child_env = env.env(_child.child_env(project_path=False))
        child_env["TF_CPP_MIN_LOG_LEVEL"] = "0"  # the adapter line is an INFO log
        try:
            run = _child.run_child(
                _child.python_command(str(_CHILD)),
                request=req,
                env=child_env,
                timeout=timeout,
                name="converters-gpu",
            )
        except _child.ChildTimeout as e:
            raise GpuUnavailableError(
                f"LiteRT's GPU accelerator did not finish within {timeout:.0f} s"
            ) from e
        except _child.ChildCrashed as e:
            raise GpuUnavailableError(
                f"LiteRT's GPU accelerator {e.how} on the software Vulkan device: "
                f"{_stderr_reason(e.stderr)}" + (f" (its output is kept in {e.log})" if e.log else "")
            ) from None
        except _child.ChildFailed as e:
            if "No adapters found" in e.stderr or "Couldn't load Vulkan" in e.stderr:
                raise GpuUnavailableError(no_adapter.format(_stderr_reason(e.stderr))) from None
            if e.kind == _child.INTERNAL:
                raise GpuUnavailableError(
                    f"{e.message} (traceback in {e.traceback})"
                ) from None
            reason = _stderr_reason(e.stderr) if e.kind == "gpu" else ""
            raise GpuUnavailableError(
                f"LiteRT's {e.kind.upper()} accelerator failed on the model: {e.message}"
                + (f" ({reason})" if reason else "")
            ) from None
        out, stderr = run.reply, run.stderr
        adapter = selected_adapter(stderr)
        if not adapter:
            # With the CPU allowed as fallback, a missing Vulkan device would
            # otherwise pass silently as "not fully accelerated".
            raise GpuUnavailableError(no_adapter.format(_stderr_reason(stderr)))
        with np.load(tmpd / "outputs.npz") as data:
            n = sum(1 for k in data.files if k.startswith("cpu"))
            cpu = [data[f"cpu{i}"] for i in range(n)]
            gpu = [data[f"gpu{i}"] for i in range(n)]
    max_diff, snr, failures = compare_gpu_outputs(cpu, gpu, min_snr_db=min_snr_db)
    fallback, partitions = parse_fallback(stderr)
    return GpuRun(
        fully_accelerated=bool(out["fully_accelerated"]),
        fallback=fallback,
        partitions=partitions,
        adapter=adapter,
        max_abs_diff=max_diff,
        snr_db=snr,
        min_snr_db=min_snr_db,
        failures=tuple(failures),
        cpu_ms=float(out["cpu_ms"]),
        gpu_ms=float(out["gpu_ms"]),
        outputs=tuple(gpu),
    )


_PARTITION = re.compile(
    r"(\d+) operations? will run on the GPU, and the remaining (\d+) operations? will run on the CPU"
)


def selected_adapter(log: str) -> str:
    """The Vulkan adapter the GPU accelerator says it selected, from its log ("" if none)."""
    found = _ADAPTER.search(log)
    return found.group(1).strip() if found else ""


def parse_fallback(log: str) -> tuple[tuple[str, ...], tuple[tuple[int, int], ...]]:
    """The ops the GPU accelerator refused and its partitions, from its log.

    The accelerator prints, for each graph it is given, "Following operations
    are not supported by GPU delegate:", one `OP: reason` line per refused op,
    then "N operations will run on the GPU, and the remaining M operations
    will run on the CPU." Repeated blocks (one per compilation) count once.
    """
    fallback: dict[str, None] = {}
    partitions: dict[tuple[int, int], None] = {}
    inside = False
    for raw in log.splitlines():
        line = raw.strip()
        if "Following operations are not supported by GPU delegate" in line:
            inside = True
            continue
        m = _PARTITION.search(line)
        if m:
            partitions[(int(m.group(1)), int(m.group(2)))] = None
            inside = False
            continue
        if inside and re.match(r"^[A-Z][A-Z0-9_]*:", line):
            fallback[line] = None
        elif inside:
            inside = False
    return tuple(fallback), tuple(partitions)


def _stderr_reason(stderr: str) -> str:
    """The lines of the accelerator's log that say why it failed."""
    keys = ("No adapters found", "Couldn't load Vulkan", "required", "static-sized",
            "Failed to", "ERROR")
    lines = [
        ln.strip() for ln in stderr.splitlines()
        if any(k in ln for k in keys) and "compiler_plugin" not in ln
    ]
    return " | ".join(dict.fromkeys(lines))[:500] or "no reason in its log"


def gpu_target_check(content: bytes, *, progress: Callable[[str], None] | None = None
                     ) -> tuple[list[str], list[str]]:
    """What `--target gpu` adds: a real run on the GPU accelerator, (issues, notes).

    Raises:
      ValidationError: the GPU outputs are NaN, all zeros, or too far from the CPU's.
      GpuUnavailableError: no Vulkan device could be set up, or the accelerator
        refused or crashed on the model.
    """
    run = run_on_gpu(content, progress=progress)
    issues: list[str] = []
    notes = [
        f"ran on LiteRT's GPU accelerator ({run.adapter or 'Vulkan'}): max |GPU - CPU| "
        f"{run.max_abs_diff:.3g}, SNR {run.snr_db:.1f} dB; {run.gpu_ms:.2f} ms vs CPU "
        f"{run.cpu_ms:.2f} ms ({TIMING_LABEL})"
    ]
    if run.fully_accelerated:
        notes.append("every op was delegated to the GPU (is_fully_accelerated)")
    else:
        issues.append(
            "LiteRT's GPU accelerator did not take every op (is_fully_accelerated() is False); "
            "these run on the CPU: " + ("; ".join(run.fallback) or "not named in its log")
        )
    if not run.passed:
        raise ValidationError(
            "The GPU accelerator's outputs fail validation against the CPU's: "
            + "; ".join(run.failures)
            + ". Convert in fp32 or fp16 mode, or use a CPU target."
        )
    return issues, notes


def describe_placement(fully_accelerated: bool, partitions: Any) -> str:
    """One phrase for where the accelerator placed a model's ops (GPU/CPU partitions)."""
    if fully_accelerated:
        return "every op on the GPU"
    split = ", ".join(f"{g} on the GPU + {c} on the CPU" for g, c in partitions)
    return f"NOT fully accelerated ({split or 'some ops on the CPU'})"
