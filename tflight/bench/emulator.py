"""An emulated ARM64 device: LiteRT's AArch64 build under qemu user-mode emulation.

Most users of `tflight` have no phone on their desk, and LiteRT's ARM kernels
(NEON, int8 dot products) differ from the x86 ones they run at home. This
module sets up, on first use and from the package registries only, a small
AArch64 user space that runs the AArch64 wheel of LiteRT under
`qemu-aarch64-static`, and runs the same benchmark child there:

* qemu 10's static `qemu-aarch64` (Debian bookworm-backports), unless a
  `qemu-aarch64-static` of version 8 or later is on PATH (qemu 7.2, Debian
  bookworm's own, crashes in LiteRT 2.x's interpreter constructor);
* an AArch64 Python 3.11 and its C libraries (Debian bookworm arm64 packages,
  unpacked with `dpkg -x`, nothing installed system-wide);
* the AArch64 wheels of the **same** `ai-edge-litert` version the host runs
  (2.3.0) and `numpy` (PyPI).

Debian packages are fetched with a private apt configuration pointing at
Debian's archive (`converters._debian`), so the set-up is the same on Debian
and Ubuntu hosts.

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

def _host_litert() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"ai-edge-litert=={version('ai-edge-litert')}"
    except PackageNotFoundError:
        return "ai-edge-litert==2.3.0"


# The emulated device runs the host's LiteRT version, so both check one runtime.
ARM64_RUNTIME = _host_litert()
_NUMPY = "numpy==2.2.6"
_QEMU_MIN_MAJOR = 8
CACHE_ENV = "TFLIGHT_CACHE_DIR"
_QEMU_NAMES = ("qemu-aarch64-static", "qemu-aarch64")

# The emulated core: a Cortex-A76, the big core of the Pixel 4 (`QEMU_CPU` overrides it).
DEFAULT_CPU = "cortex-a76"
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
_CHILD = Path(__file__).with_name("child.py")
# Runs under qemu (`python -c`); replies with `converters/_child.py`, loaded by
# path (argv[1]) after LiteRT's libraries are mapped.
_SMOKE = r"""
import platform, sys
import numpy
from ai_edge_litert import interpreter
ranges = []
for line in open("/proc/self/maps"):
    parts = line.split()
    if len(parts) >= 6 and "x" in parts[1] and "ai_edge_litert" in parts[5]:
        lo, hi = parts[0].split("-")
        ranges.append([int(lo, 16), int(hi, 16), parts[5]])
import importlib.util
spec = importlib.util.spec_from_file_location("converters_child", sys.argv[1])
child = importlib.util.module_from_spec(spec)
spec.loader.exec_module(child)
child.reply({"machine": platform.machine(), "numpy": numpy.__version__, "ranges": ranges})
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
      qemu_version: the first line of `qemu --version`.
    """

    root: Path
    site: Path
    qemu: Path
    runtime: str = ARM64_RUNTIME
    qemu_version: str = ""

    @property
    def python(self) -> Path:
        return self.root / "usr" / "bin" / "python3.11"

    def command(self, *args: str, qemu_args: tuple[str, ...] = ()) -> list[str]:
        """The argv that runs the AArch64 Python with `args`."""
        return [
            str(self.qemu), "-L", str(self.root), *qemu_args,
            str(self.python), "-s", "-B", *args,
        ]

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        env.update(
            PYTHONPATH=str(self.site),
            PYTHONNOUSERSITE="1",
            PYTHONDONTWRITEBYTECODE="1",
            TF_CPP_MIN_LOG_LEVEL="2",
            # No helper threads: their stacks and arenas would be mapped in a
            # racy order and move LiteRT's libraries from one run to the next.
            OPENBLAS_NUM_THREADS="1",
            OMP_NUM_THREADS="1",
            # qemu-user shares the address space with the guest: one malloc
            # arena keeps qemu's own threads (logging) from reserving 64 MiB
            # arenas at run-dependent moments, which would move the guest's
            # libraries. The guest's glibc reads it too (harmless).
            GLIBC_TUNABLES="glibc.malloc.arena_max=1",
        )
        # qemu's default core ("max") has SVE2, SME and i8mm, which no phone of the
        # device profiles has and LiteRT's kernels would use; emulate a Pixel 4's
        # big core unless the user names another with QEMU_CPU.
        env.setdefault("QEMU_CPU", DEFAULT_CPU)
        return env


def _say(progress: Callable[[str], None] | None, msg: str) -> None:
    if progress is not None:
        progress(msg)


def _run(cmd: list[str], step: str, *, cwd: Path | None = None, timeout: float = 900) -> str:
    from converters import _debian

    try:
        return _debian.run(cmd, step, cwd=cwd, timeout=timeout)
    except _debian.RegistryUnreachable as e:
        raise RegistryUnreachableError(f"ARM64 emulator {e}") from e
    except _debian.DebianFetchError as e:
        raise DeviceError(f"ARM64 emulator {e}") from e


def _qemu_version_line(exe: str) -> str:
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (out.strip().splitlines() or [""])[0]


def _qemu_major(exe: str) -> int:
    """The major version of a qemu binary, or 0 if it does not say."""
    import re

    m = re.search(r"version (\d+)\.", _qemu_version_line(exe))
    return int(m.group(1)) if m else 0


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
    if marker.exists() and not force and _marker_current(marker):
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
        if marker.exists() and not force and _marker_current(marker):
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


def _marker_current(marker: Path) -> bool:
    """False if the cached set-up runs another LiteRT than the host's (it is rebuilt)."""
    try:
        return json.loads(marker.read_text()).get("runtime", ARM64_RUNTIME) == ARM64_RUNTIME
    except (OSError, ValueError):
        return True  # damaged: `_load_marker` says so


def _build(work: Path, progress: Callable[[str], None] | None) -> Arm64Environment:
    from converters import _debian

    t0 = time.monotonic()
    qemu_host = next((shutil.which(n) for n in _QEMU_NAMES if shutil.which(n)), None)
    if qemu_host is not None and _qemu_major(qemu_host) < _QEMU_MIN_MAJOR:
        _say(progress, f"[arm64] {qemu_host} is older than qemu {_QEMU_MIN_MAJOR}: fetching qemu 10")
        qemu_host = None
    try:
        apt = _debian.PrivateApt(work / "apt", ("amd64", "arm64"))
    except _debian.DebianFetchError as e:
        raise DeviceError(f"the ARM64 emulator set-up: {e}") from e
    host_arch = _run(["dpkg", "--print-architecture"], "dpkg --print-architecture").strip()
    debs = work / "debs"
    packages = [f"{p}:arm64" for p in _ARM64_DEBS]
    if qemu_host is None:
        if host_arch != "amd64":
            raise DeviceError(
                f"no qemu-aarch64-static >= {_QEMU_MIN_MAJOR} on PATH and no automatic download "
                f"for a {host_arch} host; install qemu-user-static"
            )
        # In qemu 10 (Debian 13 and its backport) `qemu-user` holds the static
        # binaries; `qemu-user-static` is only links to them.
        packages.append("qemu-user:amd64/bookworm-backports")
    _say(progress, "[arm64 1/5] reading Debian's package index (bookworm + backports, amd64 + arm64)")
    _run([apt.apt, *apt.options, "update"], "apt-get update", timeout=600)
    _say(progress, f"[arm64 2/5] downloading {len(packages)} Debian packages")
    debs.mkdir()
    _run([apt.apt, *apt.options, "download", *packages], "apt-get download", cwd=debs,
         timeout=900)
    _say(progress, "[arm64 3/5] unpacking the AArch64 root")
    root = work / "root"
    root.mkdir()
    qemu_root = work / "qemu"
    for deb in sorted(debs.glob("*.deb")):
        target = qemu_root if deb.name.startswith("qemu-user_") else root
        target.mkdir(exist_ok=True)
        _run(["dpkg", "-x", str(deb), str(target)], f"dpkg -x {deb.name}")
    if qemu_host is None:
        src = qemu_root / "usr" / "bin" / "qemu-aarch64"
        if not src.is_file():
            raise DeviceError("the qemu-user package has no qemu-aarch64 binary")
        (work / "bin").mkdir()
        qemu = work / "bin" / "qemu-aarch64-static"
        shutil.move(str(src), qemu)
    else:
        qemu = Path(qemu_host)
    qemu_version = _qemu_version_line(str(qemu)) or "qemu (unknown version)"
    for sub in (qemu_root, debs, work / "apt"):
        shutil.rmtree(sub, ignore_errors=True)

    _say(progress, f"[arm64 4/5] downloading AArch64 wheels: {ARM64_RUNTIME}, {_NUMPY}")
    wheels = work / "wheels"
    plat: list[str] = []
    for p in _WHEEL_PLATFORMS:
        plat += ["--platform", p]
    _run(
        [
            sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
            "--python-version", "3.11", "--implementation", "cp", *plat,
            "-d", str(wheels), ARM64_RUNTIME, _NUMPY,
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
                "qemu_version": qemu_version,
                "runtime": ARM64_RUNTIME,
                "numpy": smoke["numpy"],
                "litert_ranges": smoke["ranges"],
                "setup_s": round(time.monotonic() - t0, 1),
            },
            indent=1,
        )
    )
    _say(progress, f"[arm64] ready in {time.monotonic() - t0:.0f} s ({qemu_version})")
    return env


def _smoke(env: Arm64Environment) -> dict:
    from converters import _child

    try:
        info = _child.run_child(
            env.command("-c", _SMOKE, _child.__file__), env=env.env(), timeout=300,
            name="tflight-arm64-smoke", tail_lines=4,
        ).reply
    except _child.ChildTimeout as e:
        raise DeviceError("LiteRT did not start under qemu within 300 s") from e
    except (_child.ChildCrashed, _child.ChildFailed) as e:
        raise DeviceError(f"LiteRT's AArch64 build does not run under {env.qemu}: {e}") from None
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
        qemu_version=info.get("qemu_version", ""),
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
      unsized_blocks: executed translation blocks between the markers whose
        size the trace did not give (not counted; reported, never dropped
        silently); None when not traced.
    """

    child: dict
    wall_s: float
    instructions_per_invoke: float | None
    cost_note: str
    unsized_blocks: int | None = None
    emulator: str = ""


_ADDR_NO_RANDOMIZE = 0x0040000
_TRACE_FLAGS = "exec,in_asm,nochain,strace"


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
    from converters import _child

    try:
        run = _child.run_child(
            env.command(str(_CHILD), qemu_args=qemu_args),
            request=request,
            env=env.env(),
            timeout=timeout,
            name="tflight-arm64",
            preexec_fn=_no_aslr,
        )
    except _child.ChildTimeout as e:
        raise DeviceError(
            f"the emulated ARM64 run did not finish within {timeout:.0f} s; "
            "use a smaller model, fewer runs, or a longer timeout"
        ) from e
    except _child.ChildCrashed as e:
        raise DeviceError(
            f"LiteRT {e.how} under the ARM64 emulator: {e.tail}"
            + (f" (its output is kept in {e.log})" if e.log else "")
        ) from None
    except _child.ChildFailed as e:
        error = {"kind": e.kind, "message": e.message, "traceback": e.traceback}
        return {"error": error}, e.seconds
    return run.reply, run.seconds


def _count_trace(fifo: Path, out: dict) -> None:
    """Reads qemu's exec+in_asm+strace log (a fifo or a file) into `out`.

    Sums the guest instructions of the translation blocks executed between the
    child's begin and end marker system calls. Each `IN:` block lists a
    translated block's instructions, one `0x<pc>:` line each; each
    `Trace N: 0x<host> [<flags>/<pc>/...]` line is one execution of the block
    starting at <pc>. `out` gets `instructions`, `misses` (executions inside
    the markers of blocks never listed), `begin` / `end` (markers seen) and
    `error` if reading failed.
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
) -> tuple[dict, float, int | None, int]:
    """One emulated run under qemu's tracer: (child result, wall s, instructions, unsized)."""
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
                    "-d", _TRACE_FLAGS, "-dfilter", dfilter, "-D", str(fifo),
                ),
            )
        finally:
            # Unblock the reader if qemu never opened the fifo.
            with contextlib.suppress(OSError):
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                os.close(fd)
            reader.join(timeout=120)
    if "error" in traced:
        return traced, wall, None, 0
    if traced.get("litert_ranges") != ranges:
        raise _RangesMoved(traced.get("litert_ranges") or [])
    if "error" in counted or not (counted.get("begin") and counted.get("end")):
        raise DeviceError(
            f"could not read qemu's trace: {counted.get('error', 'the invoke markers are missing')}"
        )
    return traced, wall, int(counted["instructions"]), int(counted["misses"])


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
    """Runs one benchmark request of `tflight.bench.child` under the ARM64 emulator.

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
    run = _run_on_arm64(env, request, count_instructions=count_instructions,
                        extra_invokes=extra_invokes, timeout=timeout, progress=progress)
    cpu = env.env()["QEMU_CPU"]
    return dataclasses.replace(run, emulator=f"{env.qemu_version}, -cpu {cpu}")


def _run_on_arm64(
    env: Arm64Environment,
    request: dict,
    *,
    count_instructions: bool,
    extra_invokes: int,
    timeout: float,
    progress: Callable[[str], None] | None,
) -> EmulatedRun:
    req = dict(
        request, min_time=0.0, warmup_min_time=0.0, max_time=0.0, threads=1, report_ranges=True
    )
    ranges = _cached_ranges(env) if count_instructions else []
    child = None
    if not ranges:
        # Learn where LiteRT's code is mapped: the same every run (no ASLR, no
        # helper threads) under the same qemu options. qemu's logging changes
        # its own allocations, which share the address space with the guest's,
        # so the learning run logs too, to /dev/null and for an empty range.
        _say(progress, "[arm64] running the model under emulation")
        learn = (
            ("-d", _TRACE_FLAGS, "-dfilter", "0x0..0xfff", "-D", os.devnull)
            if count_instructions
            else ()
        )
        child, wall = _child_call(env, req, timeout=timeout, qemu_args=learn)
        ranges = child.get("litert_ranges") or []
        if ranges and count_instructions:
            _store_ranges(env, ranges)
        if "error" in child or not count_instructions:
            return EmulatedRun(child, wall, None, "not counted")
        if not ranges:
            return EmulatedRun(
                child, wall, None, "not counted: LiteRT's address ranges are unknown"
            )
    _say(progress, "[arm64] running the model under emulation, counting guest instructions")
    counted = None
    for _attempt in range(3):
        try:
            counted = _traced_run(
                env, dict(req, extra_invokes=extra_invokes), ranges, timeout=timeout
            )
            break
        except _RangesMoved as moved:
            # Logging from a new guest thread makes qemu (which shares the
            # address space) reserve a malloc arena first: LiteRT then loads
            # elsewhere, at addresses that repeat from one traced run to the
            # next. Count again with the traced run's own addresses.
            ranges = moved.ranges
            _store_ranges(env, ranges)
    if counted is None:
        raise DeviceError(
            "LiteRT was mapped at other addresses in each traced run; instructions cannot be "
            "counted on this set-up (use --no-instructions)"
        )
    traced, wall, n, unsized = counted
    if n is None:
        return EmulatedRun(traced, wall, None, "not counted")
    note = (
        "guest AArch64 instructions executed in LiteRT's libraries per invoke "
        f"(qemu exec trace between markers around {extra_invokes} invokes; 1 thread; "
        "libc and kernel time excluded)"
    )
    if unsized:
        note += (
            f"; {unsized} executed block(s) could not be sized (their translation was not in "
            "the trace) and are not counted"
        )
    if n <= 0:
        return EmulatedRun(traced, wall, None, "not counted: no LiteRT code ran between markers",
                           unsized_blocks=unsized)
    return EmulatedRun(traced, wall, n / extra_invokes, note, unsized_blocks=unsized)
