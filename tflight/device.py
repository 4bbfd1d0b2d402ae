"""An emulated ARM64 device: LiteRT's AArch64 build under qemu user-mode emulation.

Most users of `tflight` have no phone on their desk, and LiteRT's ARM kernels
(NEON, int8 dot products) differ from the x86 ones they run at home. This
module sets up, on first use and from the package registries only, a small
AArch64 user space that runs the AArch64 wheel of LiteRT under
`qemu-aarch64-static`, and runs the same benchmark child there:

* qemu-user-static (Debian), unless a `qemu-aarch64-static` is on PATH;
* an AArch64 Python 3.11 and its C libraries (Debian arm64 packages, unpacked
  with `dpkg -x`, nothing installed system-wide);
* `ai-edge-litert==1.4.0` and `numpy` AArch64 wheels (PyPI). LiteRT 2.x
  crashes in its interpreter constructor under qemu 7.2; 1.4.0 runs.

Everything is cached under `$TFLIGHT_CACHE_DIR/arm64` (default
`~/.cache/tflight/arm64`); a finished set-up is renamed into place, so an
interrupted one never looks complete.

Wall time under emulation is not phone time. The repeatable cost figure this
module reports instead is the number of **guest AArch64 instructions executed
in LiteRT's own libraries per invoke**, counted from qemu's execution trace
(`-d exec,in_asm,nochain,strace` restricted with `-dfilter` to the address
ranges of the LiteRT libraries) between two marker system calls that the child
makes around a fixed number of invokes. It does not include time in libc or the kernel, and
an instruction is not a cycle; it is repeatable to the instruction on a given
set-up and moves with the work a model does on ARM.

References:
  Bellard. "QEMU, a fast and portable dynamic translator". USENIX ATC 2005.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

from tflight.errors import DeviceError

__all__ = [
    "ARM64_RUNTIME",
    "Arm64Environment",
    "RegistryUnreachableError",
    "EmulatedRun",
    "default_cache_dir",
    "setup_arm64",
    "run_on_arm64",
]

ARM64_RUNTIME = "ai-edge-litert==1.4.0"
_NUMPY = "numpy==1.26.4"
CACHE_ENV = "TFLIGHT_CACHE_DIR"
_QEMU_NAMES = ("qemu-aarch64-static", "qemu-aarch64")
_ARM64_DEBS = (
    "python3.11-minimal",
    "libpython3.11-minimal",
    "libpython3.11-stdlib",
    "libc6",
    "zlib1g",
    "libexpat1",
    "libffi8",
    "libssl3",
    "libbz2-1.0",
    "liblzma5",
    "libgcc-s1",
    "libstdc++6",
)
_WHEEL_PLATFORMS = (
    "manylinux_2_17_aarch64",
    "manylinux2014_aarch64",
    "manylinux_2_27_aarch64",
    "manylinux_2_28_aarch64",
)
_UNREACHABLE_HINTS = (
    "temporary failure resolving",
    "could not resolve",
    "network is unreachable",
    "failed to establish a new connection",
    "connection refused",
    "name or service not known",
    "connection timed out",
    "no route to host",
)
_CHILD = Path(__file__).with_name("_bench_child.py")
_SMOKE = r"""
import json, platform, sys
import numpy
from ai_edge_litert import interpreter
ranges = []
for line in open("/proc/self/maps"):
    parts = line.split()
    if len(parts) >= 6 and "x" in parts[1] and "ai_edge_litert" in parts[5]:
        lo, hi = parts[0].split("-")
        ranges.append([int(lo, 16), int(hi, 16), parts[5]])
print(json.dumps({"machine": platform.machine(), "numpy": numpy.__version__, "ranges": ranges}))
"""


class RegistryUnreachableError(DeviceError):
    """The emulator could not be set up because a package registry did not answer."""


def default_cache_dir() -> Path:
    """`$TFLIGHT_CACHE_DIR/arm64`, or `~/.cache/tflight/arm64`."""
    base = os.environ.get(CACHE_ENV)
    root = Path(base).expanduser() if base else Path.home() / ".cache" / "tflight"
    return root / "arm64"


@dataclasses.dataclass(frozen=True)
class Arm64Environment:
    """A ready AArch64 user space that runs LiteRT under qemu.

    Attributes:
      root: the unpacked AArch64 root (Python and its libraries).
      site: the folder with the AArch64 `ai_edge_litert` and numpy.
      qemu: the `qemu-aarch64-static` binary.
      runtime: the LiteRT requirement installed there.
    """

    root: Path
    site: Path
    qemu: Path
    runtime: str = ARM64_RUNTIME

    @property
    def python(self) -> Path:
        return self.root / "usr" / "bin" / "python3.11"

    def command(self, *args: str, qemu_args: tuple[str, ...] = ()) -> list[str]:
        """The argv that runs the AArch64 Python with `args`."""
        return [
            str(self.qemu),
            "-L",
            str(self.root),
            *qemu_args,
            str(self.python),
            "-s",
            "-B",
            *args,
        ]

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        env.update(
            PYTHONPATH=str(self.site),
            PYTHONNOUSERSITE="1",
            PYTHONDONTWRITEBYTECODE="1",
            TF_CPP_MIN_LOG_LEVEL="2",
        )
        return env


def _say(progress: Callable[[str], None] | None, msg: str) -> None:
    if progress is not None:
        progress(msg)


def _run(cmd: list[str], step: str, *, cwd: Path | None = None, timeout: float = 900) -> str:
    try:
        proc = subprocess.run(
            cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError as e:
        raise DeviceError(
            f"ARM64 emulator set-up failed at '{step}': {e.filename} not found"
        ) from e
    except subprocess.TimeoutExpired as e:
        raise RegistryUnreachableError(
            f"ARM64 emulator set-up timed out after {timeout:.0f} s at '{step}'; "
            "is the package registry reachable? Retry later."
        ) from e
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-4:])
        cls = (
            RegistryUnreachableError
            if any(h in tail.lower() for h in _UNREACHABLE_HINTS)
            else DeviceError
        )
        raise cls(f"ARM64 emulator set-up failed at '{step}' (exit {proc.returncode}): {tail}")
    return proc.stdout


def _apt_options(work: Path) -> list[str]:
    opts = [
        "-q",
        "-o",
        "APT::Architecture=amd64",
        "-o",
        "APT::Architectures::=amd64",
        "-o",
        "APT::Architectures::=arm64",
        "-o",
        f"Dir::State::Lists={work / 'lists'}",
        "-o",
        f"Dir::Cache={work / 'cache'}",
        "-o",
        "Dir::State::Status=/dev/null",
        "-o",
        "Debug::NoLocking=1",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        opts += ["-o", "APT::Sandbox::User=root"]
    return opts


def setup_arm64(
    *,
    cache_dir: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
    force: bool = False,
) -> Arm64Environment:
    """Returns a ready ARM64 emulator, setting it up on first use.

    Set-up downloads about 100 MB from Debian's and PyPI's registries (qemu
    only if none is installed), takes well under a minute on a good link, and
    is cached. It ends by running LiteRT's AArch64 interpreter once under
    qemu; a set-up that cannot do that is not kept.

    Args:
      cache_dir: where to keep it; defaults to `default_cache_dir()`.
      progress: called with one line per step (e.g. `print`); None is silent.
      force: rebuild even if a finished set-up is cached.

    Returns:
      An `Arm64Environment`.

    Raises:
      RegistryUnreachableError: a registry did not answer.
      DeviceError: anything else went wrong; the message names the step.

    Example:
      >>> env = setup_arm64(progress=print)
    """
    final = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    marker = final / "ready.json"
    if marker.exists() and not force:
        return _load_marker(marker)
    if platform.system() != "Linux":
        raise DeviceError(
            f"the ARM64 emulator needs Linux (qemu user-mode); this is {platform.system()}"
        )
    final.parent.mkdir(parents=True, exist_ok=True)
    lock_path = final.parent / ".arm64.lock"
    with open(lock_path, "w") as lock:
        import fcntl

        _say(progress, f"[arm64] waiting for the set-up lock {lock_path}")
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists() and not force:
            return _load_marker(marker)
        work = Path(tempfile.mkdtemp(prefix=".arm64-", dir=final.parent))
        try:
            env = _build(work, progress)
            if final.exists():
                shutil.rmtree(final)
            os.replace(work, final)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
    # Paths were built inside the staging folder: rebase them.
    return _load_marker(marker) if marker.exists() else env


def _build(work: Path, progress: Callable[[str], None] | None) -> Arm64Environment:
    apt = shutil.which("apt-get")
    if apt is None or shutil.which("dpkg") is None:
        raise DeviceError(
            "the ARM64 emulator set-up needs apt-get and dpkg (Debian or Ubuntu) to fetch "
            "qemu-user-static and an AArch64 Python; install them or run on such a system"
        )
    t0 = time.monotonic()
    (work / "lists" / "partial").mkdir(parents=True)
    (work / "cache" / "archives" / "partial").mkdir(parents=True)
    debs = work / "debs"
    debs.mkdir()
    opts = _apt_options(work)
    qemu_host = next((shutil.which(n) for n in _QEMU_NAMES if shutil.which(n)), None)
    packages = [f"{p}:arm64" for p in _ARM64_DEBS]
    if qemu_host is None:
        if platform.machine() not in ("x86_64", "AMD64"):
            raise DeviceError(
                f"no qemu-aarch64-static on PATH and no automatic download for a "
                f"{platform.machine()} host; install qemu-user-static"
            )
        packages.append("qemu-user-static:amd64")
    _say(progress, "[arm64 1/5] reading the Debian package index (amd64 + arm64)")
    _run([apt, *opts, "update"], "apt-get update", timeout=600)
    _say(progress, f"[arm64 2/5] downloading {len(packages)} Debian packages")
    _run([apt, *opts, "download", *packages], "apt-get download", cwd=debs, timeout=900)
    _say(progress, "[arm64 3/5] unpacking the AArch64 root")
    root = work / "root"
    root.mkdir()
    qemu_root = work / "qemu"
    for deb in sorted(debs.glob("*.deb")):
        target = qemu_root if deb.name.startswith("qemu-user-static_") else root
        target.mkdir(exist_ok=True)
        _run(["dpkg", "-x", str(deb), str(target)], f"dpkg -x {deb.name}")
    if qemu_host is None:
        src = qemu_root / "usr" / "bin" / "qemu-aarch64-static"
        if not src.exists():
            raise DeviceError("the qemu-user-static package has no qemu-aarch64-static binary")
        (work / "bin").mkdir()
        qemu = work / "bin" / "qemu-aarch64-static"
        shutil.move(str(src), qemu)
    else:
        qemu = Path(qemu_host)
    shutil.rmtree(qemu_root, ignore_errors=True)
    shutil.rmtree(debs, ignore_errors=True)
    shutil.rmtree(work / "cache", ignore_errors=True)
    shutil.rmtree(work / "lists", ignore_errors=True)

    _say(progress, f"[arm64 4/5] downloading AArch64 wheels: {ARM64_RUNTIME}, {_NUMPY}")
    wheels = work / "wheels"
    plat: list[str] = []
    for p in _WHEEL_PLATFORMS:
        plat += ["--platform", p]
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            "3.11",
            "--implementation",
            "cp",
            *plat,
            "-d",
            str(wheels),
            ARM64_RUNTIME,
            _NUMPY,
        ],
        "pip download",
        timeout=900,
    )
    site = work / "site"
    for whl in sorted(wheels.glob("*.whl")):
        with zipfile.ZipFile(whl) as z:
            z.extractall(site)
    shutil.rmtree(wheels, ignore_errors=True)

    env = Arm64Environment(root=root, site=site, qemu=qemu)
    _say(progress, "[arm64 5/5] checking that LiteRT runs under emulation")
    smoke = _smoke(env)
    (work / "ready.json").write_text(
        json.dumps(
            {
                "root": "root",
                "site": "site",
                "qemu": str(qemu) if qemu_host else "bin/qemu-aarch64-static",
                "runtime": ARM64_RUNTIME,
                "numpy": smoke["numpy"],
                "litert_ranges": smoke["ranges"],
                "setup_s": round(time.monotonic() - t0, 1),
            },
            indent=1,
        )
    )
    _say(progress, f"[arm64] ready in {time.monotonic() - t0:.0f} s")
    return env


def _smoke(env: Arm64Environment) -> dict:
    try:
        proc = subprocess.run(
            env.command("-c", _SMOKE),
            env=env.env(),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise DeviceError("LiteRT did not start under qemu within 300 s") from e
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-4:])
        raise DeviceError(
            f"LiteRT's AArch64 build does not run under {env.qemu} (exit {proc.returncode}): {tail}"
        )
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    if info.get("machine") != "aarch64":
        raise DeviceError(f"the emulated Python reports machine {info.get('machine')!r}")
    return info


def _load_marker(marker: Path) -> Arm64Environment:
    base = marker.parent
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError) as e:
        raise DeviceError(
            f"the cached ARM64 set-up at {base} is damaged ({e}); delete it to rebuild"
        ) from e
    qemu = Path(info["qemu"])
    env = Arm64Environment(
        root=base / info["root"],
        site=base / info["site"],
        qemu=qemu if qemu.is_absolute() else base / qemu,
        runtime=info.get("runtime", ARM64_RUNTIME),
    )
    if not (env.python.exists() and env.qemu.exists() and env.site.is_dir()):
        raise DeviceError(
            f"the cached ARM64 set-up at {base} is incomplete (missing python, qemu or site); "
            "delete the folder or call setup_arm64(force=True)"
        )
    return env


@dataclasses.dataclass(frozen=True)
class EmulatedRun:
    """What one benchmark run under the ARM64 emulator returned.

    Attributes:
      child: the child's JSON result (timings are under emulation).
      wall_s: wall time of the emulated process.
      instructions_per_invoke: guest AArch64 instructions executed in LiteRT's
        libraries per invoke, or None if not counted.
      cost_note: how `instructions_per_invoke` was obtained, or why not.
    """

    child: dict
    wall_s: float
    instructions_per_invoke: float | None
    cost_note: str


_ADDR_NO_RANDOMIZE = 0x0040000


def _no_aslr() -> None:
    """Turns off address randomisation in the child so qemu maps the guest alike every run."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        current = libc.personality(0xFFFFFFFF)
        if current != -1:
            libc.personality(current | _ADDR_NO_RANDOMIZE)
    except (OSError, AttributeError):
        pass


def _child_call(
    env: Arm64Environment,
    request: dict,
    *,
    timeout: float,
    qemu_args: tuple[str, ...] = (),
) -> tuple[dict, float]:
    from tflight._bench_child import RESULT_MARK

    with tempfile.TemporaryDirectory(prefix="tflight-arm64-") as tmp:
        req_path = Path(tmp) / "request.json"
        req_path.write_text(json.dumps(request))
        t0 = time.monotonic()
        try:
            proc = subprocess.run(
                env.command(str(_CHILD), str(req_path), qemu_args=qemu_args),
                env=env.env(),
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
                preexec_fn=_no_aslr,
            )
        except subprocess.TimeoutExpired as e:
            raise DeviceError(
                f"the emulated ARM64 run did not finish within {timeout:.0f} s; "
                "use a smaller model, fewer runs, or a longer timeout"
            ) from e
        wall = time.monotonic() - t0
    line = next(
        (ln for ln in reversed(proc.stdout.splitlines()) if ln.startswith(RESULT_MARK)), None
    )
    if line is None:
        tail = "\n".join(proc.stderr.strip().splitlines()[-3:])
        raise DeviceError(
            f"LiteRT crashed under the ARM64 emulator (exit {proc.returncode}): {tail}"
        )
    return json.loads(line[len(RESULT_MARK) :]), wall


def _count_trace(fifo: Path, out: dict) -> None:
    """Reads qemu's exec+in_asm+strace log.

    Sums the guest instructions of the translation blocks executed between the
    child's begin and end marker system calls.
    """
    sizes: dict[int, int] = {}
    total = misses = 0
    inside = False
    pending_start, pending_n = None, 0
    try:
        with open(fifo, "rb") as f:
            for line in f:
                if line.startswith(b"0x") and pending_start is not None:
                    if pending_n == 0:
                        pending_start = int(line[: line.index(b":")], 16)
                    pending_n += 1
                elif line.startswith(b"IN:"):
                    pending_start, pending_n = -1, 0
                elif line.startswith(b"Trace"):
                    if pending_start is not None and pending_n:
                        sizes[pending_start] = pending_n
                    pending_start = None
                    if not inside:
                        continue
                    pc = int(line.split(b"[", 1)[1].split(b"/")[1], 16)
                    n = sizes.get(pc)
                    if n is None:
                        misses += 1
                    else:
                        total += n
                elif pending_start is not None and pending_n and not line.strip():
                    sizes[pending_start] = pending_n
                    pending_start = None
                elif b"@@tflight-invokes-begin@@" in line:
                    inside = True
                    out["begin"] = True
                elif b"@@tflight-invokes-end@@" in line:
                    inside = False
                    out["end"] = True
    except Exception as e:  # noqa: BLE001 - reported as a missing figure, not a crash
        out["error"] = f"{type(e).__name__}: {e}"
    out["instructions"] = total
    out["misses"] = misses


class _RangesMoved(Exception):
    def __init__(self, ranges: list):
        super().__init__("LiteRT was mapped at other addresses")
        self.ranges = ranges


def _traced_run(
    env: Arm64Environment, request: dict, ranges: list, *, timeout: float
) -> tuple[dict, float, int | None]:
    """One emulated run under qemu's tracer: (child result, wall s, instructions)."""
    with tempfile.TemporaryDirectory(prefix="tflight-trace-") as tmp:
        fifo = Path(tmp) / "trace.fifo"
        os.mkfifo(fifo)
        counted: dict = {}
        reader = threading.Thread(target=_count_trace, args=(fifo, counted), daemon=True)
        reader.start()
        dfilter = ",".join(f"0x{lo:x}..0x{hi - 1:x}" for lo, hi, *_ in ranges)
        try:
            traced, wall = _child_call(
                env,
                request,
                timeout=timeout,
                qemu_args=(
                    "-d",
                    "exec,in_asm,nochain,strace",
                    "-dfilter",
                    dfilter,
                    "-D",
                    str(fifo),
                ),
            )
        finally:
            # Unblock the reader if qemu never opened the fifo.
            with contextlib.suppress(OSError):
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                os.close(fd)
            reader.join(timeout=120)
    if "error" in traced:
        return traced, wall, None
    if traced.get("litert_ranges") != ranges:
        raise _RangesMoved(traced.get("litert_ranges") or [])
    if "error" in counted or not (counted.get("begin") and counted.get("end")):
        raise DeviceError(
            f"could not read qemu's trace: {counted.get('error', 'the invoke markers are missing')}"
        )
    return traced, wall, int(counted["instructions"])


def _cached_ranges(env: Arm64Environment) -> list:
    try:
        return json.loads((env.site.parent / "litert_ranges.json").read_text())
    except (OSError, ValueError):
        return []


def _store_ranges(env: Arm64Environment, ranges: list) -> None:
    path = env.site.parent / "litert_ranges.json"
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    with contextlib.suppress(OSError):
        tmp.write_text(json.dumps(ranges))
        os.replace(tmp, path)


def run_on_arm64(
    request: dict,
    *,
    env: Arm64Environment | None = None,
    count_instructions: bool = True,
    extra_invokes: int = 4,
    timeout: float = 900.0,
    progress: Callable[[str], None] | None = None,
) -> EmulatedRun:
    """Runs one benchmark request of `_bench_child` under the ARM64 emulator.

    Args:
      request: the child request (model path, runs, inputs ...); runs are
        counted exactly (no minimum time) so that the traced runs repeat.
      env: a ready environment; `setup_arm64(progress=progress)` by default.
      count_instructions: also count guest instructions per invoke (the run
        is made under qemu's tracer, a few times slower).
      extra_invokes: how many invokes are counted, after the timed ones.
      timeout: seconds allowed for each emulated process.
      progress: called with one line per step.

    Returns:
      An `EmulatedRun`.

    Raises:
      DeviceError: set-up failed, LiteRT crashed or timed out under emulation.
    """
    env = env if env is not None else setup_arm64(progress=progress)
    req = dict(
        request, min_time=0.0, warmup_min_time=0.0, max_time=0.0, threads=1, report_ranges=True
    )
    ranges = _cached_ranges(env) if count_instructions else []
    child = None
    if not ranges:
        # Learn where LiteRT's code is mapped (the same every run: no ASLR).
        _say(progress, "[arm64] running the model under emulation")
        child, wall = _child_call(env, req, timeout=timeout)
        ranges = child.get("litert_ranges") or []
        if ranges:
            _store_ranges(env, ranges)
        if "error" in child or not count_instructions:
            return EmulatedRun(child, wall, None, "not counted")
        if not ranges:
            return EmulatedRun(
                child, wall, None, "not counted: LiteRT's address ranges are unknown"
            )
    _say(progress, "[arm64] running the model under emulation, counting guest instructions")
    try:
        traced, wall, n = _traced_run(
            env, dict(req, extra_invokes=extra_invokes), ranges, timeout=timeout
        )
    except _RangesMoved:
        with contextlib.suppress(OSError):
            (env.site.parent / "litert_ranges.json").unlink()
        if child is None:
            # The cache was stale: start again with the new addresses.
            return run_on_arm64(
                request,
                env=env,
                count_instructions=count_instructions,
                extra_invokes=extra_invokes,
                timeout=timeout,
                progress=progress,
            )
        raise DeviceError("LiteRT was mapped at other addresses in the traced run") from None
    if n is None:
        return EmulatedRun(traced, wall, None, "not counted")
    note = (
        "guest AArch64 instructions executed in LiteRT's libraries per invoke "
        f"(qemu exec trace between markers around {extra_invokes} invokes; 1 thread; "
        "libc and kernel time excluded)"
    )
    if n <= 0:
        return EmulatedRun(traced, wall, None, "not counted: no LiteRT code ran between markers")
    return EmulatedRun(traced, wall, n / extra_invokes, note)
