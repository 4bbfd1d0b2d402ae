"""Setting up the emulated ARM64 device: LiteRT's AArch64 build under qemu user-mode.

Most users of `tflight` have no phone on their desk, and LiteRT's ARM kernels
(NEON, int8 dot products) differ from the x86 ones they run at home.
`setup_arm64` builds, on first use and from the package registries only, a
small AArch64 user space that runs the AArch64 wheel of LiteRT under
`qemu-aarch64-static` (`tflight.bench.emulator` runs the benchmark child
there):

* qemu 10's static `qemu-aarch64` (Debian bookworm-backports), unless a
  `qemu-aarch64-static` of version 8 or later is on PATH (qemu 7.2, Debian
  bookworm's own, crashes in LiteRT 2.x's interpreter constructor);
* an AArch64 Python 3.11 and its C libraries (Debian bookworm arm64 packages,
  unpacked with `dpkg -x`, nothing installed system-wide);
* the AArch64 wheels of the **same** `ai-edge-litert` version the host runs
  (2.3.0) and `numpy` (PyPI).

Debian packages are fetched and the folder is built by the project's one
installer (`converters._debian`: a private apt configuration pointing at
Debian's archive, so the set-up is the same on Debian and Ubuntu hosts).
Everything is cached under `$TFLIGHT_CACHE_DIR/arm64` (default
`~/.cache/tflight/arm64`); a finished set-up is renamed into place, so an
interrupted one never looks complete.
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
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

from converters import _debian
from tflight.errors import DeviceError

__all__ = [
    "ARM64_RUNTIME",
    "CACHE_ENV",
    "Arm64Environment",
    "RegistryUnreachableError",
    "default_cache_dir",
    "setup_arm64",
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
CACHE_ENV = _debian.CACHE_ENV
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
    return _debian.cache_dir("arm64")


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


@contextlib.contextmanager
def _as_device_errors() -> Iterator[None]:
    """The installer's errors, as the emulator's own (a registry that did not answer apart)."""
    try:
        yield
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
    if platform.system() != "Linux" and not _finished(final, force):
        raise DeviceError(
            f"the ARM64 emulator needs Linux (qemu user-mode); this is {platform.system()}"
        )
    _debian.install_once(
        final,
        lambda work: _build(work, progress),
        ready=lambda f: _finished(f, force),
        on_wait=lambda lock: _say(progress, f"[arm64] waiting for the set-up lock {lock}"),
    )
    # Paths were built inside the staging folder: the marker rebases them.
    return _load_marker(final / "ready.json")


def _finished(final: Path, force: bool) -> bool:
    marker = final / "ready.json"
    return marker.exists() and not force and _marker_current(marker)


def _marker_current(marker: Path) -> bool:
    """False if the cached set-up runs another LiteRT than the host's (it is rebuilt)."""
    try:
        return json.loads(marker.read_text()).get("runtime", ARM64_RUNTIME) == ARM64_RUNTIME
    except (OSError, ValueError):
        return True  # damaged: `_load_marker` says so


def _build(work: Path, progress: Callable[[str], None] | None) -> Arm64Environment:
    t0 = time.monotonic()
    qemu_host = next((shutil.which(n) for n in _QEMU_NAMES if shutil.which(n)), None)
    if qemu_host is not None and _qemu_major(qemu_host) < _QEMU_MIN_MAJOR:
        _say(progress, f"[arm64] {qemu_host} is older than qemu {_QEMU_MIN_MAJOR}: fetching qemu 10")
        qemu_host = None
    try:
        apt = _debian.PrivateApt(work / "apt", ("amd64", "arm64"))
    except _debian.DebianFetchError as e:
        raise DeviceError(f"the ARM64 emulator set-up: {e}") from e
    with _as_device_errors():
        return _build_with(apt, work, qemu_host, progress, t0)


def _build_with(
    apt: _debian.PrivateApt,
    work: Path,
    qemu_host: str | None,
    progress: Callable[[str], None] | None,
    t0: float,
) -> Arm64Environment:
    host_arch = _debian.run(["dpkg", "--print-architecture"], "dpkg --print-architecture").strip()
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
    apt.update()
    _say(progress, f"[arm64 2/5] downloading {len(packages)} Debian packages")
    downloaded = apt.download(packages, debs)
    _say(progress, "[arm64 3/5] unpacking the AArch64 root")
    root = work / "root"
    qemu_root = work / "qemu"
    _debian.unpack([d for d in downloaded if not d.name.startswith("qemu-user_")], root)
    _debian.unpack([d for d in downloaded if d.name.startswith("qemu-user_")], qemu_root)
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
    _debian.run(
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


