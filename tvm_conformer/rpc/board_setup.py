"""The emulated board's files, prepared once and cached: an aarch64 Python 3.11 unpacked from
Debian's arm64 packages (`apt-get download`, `dpkg -x`), the aarch64 wheels of the host's TVM pins
(`pip download`, unzipped), and the qemu wrapper that runs it (`qemu.py`)."""

from __future__ import annotations

import fcntl
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tvm_conformer.errors import UserError
from tvm_conformer.rpc.qemu import CPU_ENV, DEFAULT_CPU, qemu_cpu, require_qemu, write_wrap
from tvm_conformer.rpc.tracker import say

FORMAT = 1

# Debian arm64 packages of Python 3.11 and the libraries it links.
DEBS = (
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
    "libsqlite3-0",
    "libgcc-s1",
    "libstdc++6",
    "libuuid1",
    "libncursesw6",
    "libtinfo6",
    "libreadline8",
    "libdb5.3",
    "libgdbm6",
    "libnsl2",
    "libtirpc3",
    "libcrypt1",
)
# Wheels the RPC server needs (tornado only serves the tracker, which runs on the host).
WHEELS = (
    "apache-tvm",
    "apache-tvm-ffi",
    "numpy",
    "ml_dtypes",
    "typing_extensions",
    "psutil",
    "cloudpickle",
)
PLATFORMS = (
    "manylinux_2_28_aarch64",
    "manylinux_2_27_aarch64",
    "manylinux_2_24_aarch64",
    "manylinux_2_17_aarch64",
    "manylinux2014_aarch64",
)


@dataclass(frozen=True)
class BoardRoot:
    """A prepared board: `root` (aarch64 Debian files), `site` (wheels), `wrap` (the python)."""

    base: Path
    root: Path
    site: Path
    wrap: Path
    versions: dict[str, str]

    def python(self, cpu: str = DEFAULT_CPU) -> tuple[list[str], dict[str, str]]:
        """Command prefix and environment that run the emulated Python on core `cpu`."""
        return [str(self.wrap)], {**os.environ, CPU_ENV: qemu_cpu(cpu)}


def board_dir(cache: Path | None) -> Path:
    """The board's cache directory (`cache`, default `cache_dir()/"board"`), created."""
    from tvm_conformer.paths import cache_dir

    path = cache if cache is not None else cache_dir() / "board"
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (a lock file) for the duration of the block."""
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _run(cmd: Sequence[str], what: str, cwd: Path | None = None) -> str:
    """Run a setup command; UserError naming `what` and the last output lines if it fails."""
    res = subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True)
    if res.returncode != 0:
        tail = " | ".join((res.stderr or res.stdout).strip().splitlines()[-3:])
        raise UserError(f"{what} failed ({shlex.join(cmd)}): {tail}")
    return res.stdout


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _wanted_versions() -> dict[str, str]:
    """The wheels for the board, pinned to the versions installed on the host."""
    versions = {}
    for name in WHEELS:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError as exc:
            raise UserError(
                f"{name} is not installed on the host; install the project (pip install -e .)"
            ) from exc
    return versions


def _check_host_tools() -> None:
    require_qemu()
    for tool in ("dpkg", "apt-get"):
        if shutil.which(tool) is None:
            raise UserError(f"{tool} is missing: the board setup needs a Debian/Ubuntu host")


def _ensure_arm64_arch(progress: bool) -> None:
    archs = _run(["dpkg", "--print-foreign-architectures"], "listing dpkg architectures")
    if "arm64" in archs.split():
        return
    if os.geteuid() != 0:
        raise UserError(
            "apt has no arm64 packages; run once as root: "
            "`dpkg --add-architecture arm64 && apt-get update`"
        )
    say(progress, "adding the arm64 architecture to dpkg and running apt-get update")
    _run(["dpkg", "--add-architecture", "arm64"], "dpkg --add-architecture arm64")
    _run(["apt-get", "update"], "apt-get update")


def _download_debs(dest: Path, progress: bool) -> list[Path]:
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    cmd = ["apt-get", "download", *(f"{name}:arm64" for name in DEBS)]
    say(progress, f"downloading {len(DEBS)} Debian arm64 packages (~20 MB)")
    try:
        _run(cmd, "apt-get download", cwd=dest)
    except UserError:
        if os.geteuid() != 0:
            raise
        say(progress, "apt-get download failed; running apt-get update and retrying")
        _run(["apt-get", "update"], "apt-get update")
        _run(cmd, "apt-get download", cwd=dest)
    return sorted(dest.glob("*.deb"))


def _download_wheels(dest: Path, versions: dict[str, str], progress: bool) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    reqs = [f"{name}=={version}" for name, version in versions.items()]
    say(progress, f"downloading aarch64 wheels (~110 MB): {' '.join(reqs)}")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    cmd += ["--progress-bar", "off", "--python-version", "3.11", "--implementation", "cp"]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    _run([*cmd, "-d", str(dest), *reqs], "pip download of the aarch64 wheels")
    found = {}
    for whl in dest.glob("*.whl"):
        name, version = whl.name.split("-")[:2]
        found[(_normalize(name), version)] = whl
    wheels = []
    for name, version in versions.items():
        whl = found.get((_normalize(name), version))
        if whl is None:
            raise UserError(f"pip download gave no aarch64 wheel for {name}=={version}")
        wheels.append(whl)
    return wheels


def _unpack_wheels(wheels: list[Path], site: Path) -> None:
    for whl in wheels:
        with zipfile.ZipFile(whl) as zf:
            zf.extractall(site)
    # A wheel's `<dist>.data/{purelib,platlib}` belongs into site-packages itself.
    for data in site.glob("*.data"):
        for scheme in ("purelib", "platlib"):
            if (data / scheme).is_dir():
                shutil.copytree(data / scheme, site, dirs_exist_ok=True)


def ensure_board_root(cache: Path | None = None, progress: bool = True) -> BoardRoot:
    """Prepare the emulated board once (cached under `cache`, default `cache_dir()/"board"`)."""
    base = board_dir(cache)
    versions = _wanted_versions()
    board = BoardRoot(
        base=base,
        root=base / "root",
        site=base / "site",
        wrap=base / "python3.11-aarch64",
        versions=versions,
    )
    marker = base / "ready.json"
    expected = {"format": FORMAT, "debs": list(DEBS), "wheels": versions}
    with locked(base / ".setup.lock"):
        if marker.is_file() and json.loads(marker.read_text()) == expected:
            return board
        _check_host_tools()
        say(progress, f"preparing the emulated aarch64 board in {base} (once)")
        marker.unlink(missing_ok=True)
        _ensure_arm64_arch(progress)
        debs = _download_debs(base / "downloads" / "debs", progress)
        wheels = _download_wheels(base / "downloads" / "wheels", versions, progress)
        say(progress, f"unpacking {len(debs)} packages and {len(wheels)} wheels")
        for path in (board.root, board.site):
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir()
        for deb in debs:
            _run(["dpkg", "-x", str(deb), str(board.root)], f"dpkg -x {deb.name}")
        _unpack_wheels(wheels, board.site)
        write_wrap(board.wrap, board.root, board.site)
        say(progress, "checking it: importing tvm under qemu (~10-30 s)")
        cmd, env = board.python()
        script = "import tvm, tvm_ffi; print(tvm.__version__, tvm_ffi.__version__)"
        res = subprocess.run([*cmd, "-c", script], env=env, capture_output=True, text=True)
        got = res.stdout.split()
        if res.returncode != 0 or got != [versions["apache-tvm"], versions["apache-tvm-ffi"]]:
            tail = " | ".join((res.stderr or res.stdout).strip().splitlines()[-3:])
            raise UserError(f"the emulated Python cannot import tvm: {tail}")
        marker.write_text(json.dumps(expected, indent=1) + "\n")
        say(progress, f"board ready: tvm {got[0]}, tvm-ffi {got[1]} on emulated aarch64")
    return board
