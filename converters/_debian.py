"""Installing Debian packages into a private cache folder, without installing them system-wide.

The one installer of the project's set-ups: the ARM64 emulator
(`tflight.bench.emulator`) and the software Vulkan device (`converters.gpu`)
both need packages newer than, or foreign to, the host
system: qemu 10 and mesa 25 from Debian bookworm-backports, an AArch64 Python
from Debian bookworm. Both are fetched the same way: `apt-get` with its own
sources list, package lists, cache and an empty dpkg status, so nothing on the
host is read or changed and the result is the same on Debian and Ubuntu hosts
(Ubuntu's own archive carries no arm64 packages and no bookworm-backports).
Packages are unpacked with `dpkg -x`; nothing is installed system-wide.

What this needs from the host: `apt-get`, `dpkg` and Debian's archive key
(`/usr/share/keyrings/debian-archive-keyring.gpg`, package
`debian-archive-keyring`, present on every Debian system and installable on
Ubuntu). `TFLIGHT_DEBIAN_MIRROR` overrides the mirror (default
`http://deb.debian.org/debian`).

`install_once` is the shared life cycle of such a set-up: a folder under
`cache_dir(name)` (`$TFLIGHT_CACHE_DIR/<name>`, default
`~/.cache/tflight/<name>`) built once, under a lock, in a staging folder that
is renamed into place when complete, so an interrupted set-up never looks
finished and two processes never build it at the same time.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = [
    "CACHE_ENV",
    "DebianFetchError",
    "RegistryUnreachable",
    "KEYRING",
    "PrivateApt",
    "cache_dir",
    "install_once",
    "run",
    "unpack",
    "package_name",
]

CACHE_ENV = "TFLIGHT_CACHE_DIR"

KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
MIRROR_ENV = "TFLIGHT_DEBIAN_MIRROR"
SUITES = ("bookworm", "bookworm-backports")
# Never unpacked into a private library folder: the host's own C and C++
# runtimes must stay the ones the process started with.
HOST_RUNTIME = frozenset({"libc6", "libgcc-s1", "gcc-12-base", "libstdc++6"})

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


class DebianFetchError(Exception):
    """A package could not be fetched or unpacked; the message names the step."""


class RegistryUnreachable(DebianFetchError):
    """The Debian archive (or PyPI) did not answer."""


def run(cmd: Sequence[str], step: str, *, cwd: Path | None = None, timeout: float = 900,
        env: dict | None = None) -> str:
    """Runs a set-up command; failures become `DebianFetchError` naming `step`."""
    try:
        proc = subprocess.run(
            list(cmd), cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False,
            env=env,
        )
    except FileNotFoundError as e:
        raise DebianFetchError(f"set-up failed at '{step}': {e.filename} not found") from e
    except subprocess.TimeoutExpired as e:
        raise RegistryUnreachable(
            f"set-up timed out after {timeout:.0f} s at '{step}'; is the package registry "
            "reachable? Retry later."
        ) from e
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-4:])
        cls = (
            RegistryUnreachable
            if any(h in tail.lower() for h in _UNREACHABLE_HINTS)
            else DebianFetchError
        )
        raise cls(f"set-up failed at '{step}' (exit {proc.returncode}): {tail}")
    return proc.stdout


class PrivateApt:
    """`apt-get` on Debian bookworm + bookworm-backports with state kept under `work`.

    Args:
      work: a private folder (lists, cache and sources live there).
      architectures: package architectures to index, the first being the
        default one (e.g. `("amd64", "arm64")`).
    """

    def __init__(self, work: Path, architectures: Sequence[str] = ("amd64",)):
        self.apt = shutil.which("apt-get")
        if self.apt is None or shutil.which("dpkg") is None:
            raise DebianFetchError(
                "this set-up needs apt-get and dpkg (Debian or Ubuntu) to fetch Debian "
                "packages; install them or run on such a system"
            )
        if not KEYRING.is_file():
            raise DebianFetchError(
                f"Debian's archive key {KEYRING} is missing (on Ubuntu: "
                "`apt-get install debian-archive-keyring`); it is needed to check the "
                "Debian packages this set-up downloads"
            )
        self.work = work
        for sub in ("lists/partial", "cache/archives/partial", "parts"):
            (work / sub).mkdir(parents=True, exist_ok=True)
        mirror = os.environ.get(MIRROR_ENV, "http://deb.debian.org/debian").rstrip("/")
        archs = ",".join(architectures)
        (work / "sources.list").write_text(
            "".join(
                f"deb [arch={archs} signed-by={KEYRING}] {mirror} {suite} main\n"
                for suite in SUITES
            )
        )
        self.options = [
            "-q",
            "-o", f"APT::Architecture={architectures[0]}",
            *[x for a in architectures for x in ("-o", f"APT::Architectures::={a}")],
            "-o", f"Dir::Etc::SourceList={work / 'sources.list'}",
            "-o", f"Dir::Etc::SourceParts={work / 'parts'}",
            "-o", f"Dir::State::Lists={work / 'lists'}",
            "-o", f"Dir::Cache={work / 'cache'}",
            "-o", "Dir::State::Status=/dev/null",
            "-o", "Debug::NoLocking=1",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            self.options += ["-o", "APT::Sandbox::User=root"]

    def update(self) -> None:
        run([self.apt, *self.options, "update"], "apt-get update", timeout=600)

    def closure(self, packages: Sequence[str], *, release: str | None = None) -> list[str]:
        """`name=version` of `packages` and everything they depend on (an empty system)."""
        cmd = [self.apt, *self.options, "-s"]
        if release:
            cmd += ["-t", release]
        out = run([*cmd, "install", *packages], "apt-get install --simulate")
        pins = []
        for line in out.splitlines():
            if line.startswith("Inst "):
                parts = line.split()
                pins.append(f"{parts[1]}={parts[2].strip('()[]')}")
        return pins

    def version(self, package: str, *, release: str | None = None) -> str | None:
        """The version apt would install for `package` (from `release` if given)."""
        for pin in self.closure([package], release=release):
            name, _, ver = pin.partition("=")
            if name.split(":")[0] == package.split(":")[0]:
                return ver
        return None

    def download(self, pins: Sequence[str], dest: Path) -> list[Path]:
        dest.mkdir(parents=True, exist_ok=True)
        run([self.apt, *self.options, "download", *pins], "apt-get download", cwd=dest,
            timeout=900)
        return sorted(dest.glob("*.deb"))


def unpack(debs: Sequence[Path], root: Path) -> None:
    """`dpkg -x` each package into `root`."""
    root.mkdir(parents=True, exist_ok=True)
    for deb in debs:
        run(["dpkg", "-x", str(deb), str(root)], f"dpkg -x {deb.name}")


def package_name(pin_or_deb: str) -> str:
    """`libfoo1` from `libfoo1=1.2-3`, `libfoo1:arm64=...` or `libfoo1_1.2-3_amd64.deb`."""
    name = pin_or_deb.split("=", 1)[0].split("_", 1)[0]
    return name.split(":", 1)[0]


def cache_dir(name: str) -> Path:
    """`$TFLIGHT_CACHE_DIR/<name>`, or `~/.cache/tflight/<name>`."""
    base = os.environ.get(CACHE_ENV)
    root = Path(base).expanduser() if base else Path.home() / ".cache" / "tflight"
    return root / name


def install_once(
    final: Path,
    build: Callable[[Path], None],
    *,
    ready: Callable[[Path], bool],
    on_wait: Callable[[Path], None] | None = None,
) -> bool:
    """Builds the set-up folder `final` once, atomically and under a lock.

    `build(work)` fills a staging folder next to `final`; when it returns,
    the staging folder replaces `final` in one rename. If it raises, the
    staging folder is deleted and `final` is left as it was.

    Args:
      final: the set-up's folder.
      build: fills the staging folder it is given.
      ready: whether a finished set-up is at `final` (checked again once
        the lock is held, as another process may have just built it); return
        False to force a rebuild.
      on_wait: called with the lock's path before waiting for it.

    Returns:
      True if this call built the set-up, False if one was ready.
    """
    if ready(final):
        return False
    final.parent.mkdir(parents=True, exist_ok=True)
    lock_path = final.parent / f".{final.name}.lock"
    with open(lock_path, "w") as lock:
        import fcntl

        if on_wait is not None:
            on_wait(lock_path)
        fcntl.flock(lock, fcntl.LOCK_EX)
        if ready(final):
            return False
        work = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
        try:
            build(work)
            if final.exists():
                shutil.rmtree(final)
            os.replace(work, final)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
    return True
