"""The emulated aarch64 board: the stock TVM RPC server on an aarch64 Python under qemu-user.

`ensure_board_root` prepares (once, cached) an aarch64 Python 3.11 from Debian's arm64 packages,
the aarch64 wheels of the host's TVM pins, and a wrapper script that runs that Python under
`qemu-aarch64`. `start_board` starts `python -m tvm.exec.rpc_server` on it, registered at a
tracker. `board_up`/`board_down`/`board_status` manage detached boards recorded in a state file.
"""

from __future__ import annotations

import fcntl
import functools
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from tvm_conformer.errors import UserError
from tvm_conformer.rpc.tracker import (
    PROGRESS_PERIOD_S,
    TrackerHandle,
    free_port,
    log_tail,
    registered_servers,
    say,
    spawn,
    start_tracker,
    stop_group,
    tracker_reachable,
    tracker_summary,
)

CPUS = ("cortex-a55", "cortex-a53", "cortex-a72", "cortex-a76")
DEFAULT_CPU = "cortex-a55"
DEFAULT_TRACKER = ("127.0.0.1", 9190)
CPU_ENV = "TVM_CONFORMER_BOARD_CPU"
# qemu model to emulate a core that this qemu lacks (qemu < 8 has no cortex-a55): same ISA.
QEMU_FALLBACK = {"cortex-a55": "cortex-a76"}
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


@functools.cache
def qemu_cpu(cpu: str) -> str:
    """The qemu `-cpu` model that emulates `cpu`: itself, or a same-ISA stand-in if qemu lacks it."""
    _require_qemu()
    # `-cpu help` lists the models but exits with status 1.
    res = subprocess.run(["qemu-aarch64", "-cpu", "help"], capture_output=True, text=True)
    models = res.stdout.split()
    if cpu in models:
        return cpu
    if QEMU_FALLBACK.get(cpu) in models:
        return QEMU_FALLBACK[cpu]
    raise UserError(f"this qemu-aarch64 cannot emulate {cpu}; it knows {', '.join(models[2:])}")


def _board_dir(cache: Path | None) -> Path:
    from tvm_conformer.paths import cache_dir

    path = cache if cache is not None else cache_dir() / "board"
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def _locked(path: Path) -> Iterator[None]:
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


def _require_qemu() -> None:
    if shutil.which("qemu-aarch64") is None:
        raise UserError("qemu-aarch64 is missing; install it with `apt-get install qemu-user`")


def _check_host_tools() -> None:
    _require_qemu()
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


def _write_wrap(wrap: Path, root: Path, site: Path) -> None:
    python = root / "usr" / "bin" / "python3.11"
    text = (
        "#!/bin/sh\n"
        f"# tvm-conformer's emulated aarch64 Python; ${CPU_ENV} picks the core.\n"
        f"export PYTHONPATH={shlex.quote(str(site))}\n"
        "export PYTHONNOUSERSITE=1\n"
        f"exec qemu-aarch64 -L {shlex.quote(str(root))} -0 {shlex.quote(str(wrap))} "
        f'-cpu "${{{CPU_ENV}:-{qemu_cpu(DEFAULT_CPU)}}}" {shlex.quote(str(python))} "$@"\n'
    )
    wrap.write_text(text)
    wrap.chmod(0o755)


def ensure_board_root(cache: Path | None = None, progress: bool = True) -> BoardRoot:
    """Prepare the emulated board once (cached under `cache`, default `cache_dir()/"board"`)."""
    base = _board_dir(cache)
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
    with _locked(base / ".setup.lock"):
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
        _write_wrap(board.wrap, board.root, board.site)
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


@dataclass
class BoardHandle:
    """A running emulated board (its RPC server); `stop()` ends it (also as a context manager)."""

    key: str
    cpu: str
    port: int
    pid: int
    tracker: tuple[str, int]
    log: Path
    proc: subprocess.Popen | None = field(default=None, repr=False)

    def stop(self) -> None:
        """Stop the RPC server and its worker processes."""
        stop_group(self.pid, self.proc)

    def __enter__(self) -> BoardHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _check_args(cpu: str, count: int) -> None:
    if cpu not in CPUS:
        raise UserError(f"unknown cpu {cpu!r}; choose one of {', '.join(CPUS)}")
    if count < 1:
        raise UserError("--count must be at least 1")


def _spawn_board(
    board: BoardRoot, key: str, cpu: str, tracker: tuple[str, int], host: str
) -> BoardHandle:
    port = free_port(host)
    log = board.base / "logs" / f"board-{key}-{port}.log"
    prefix, env = board.python(cpu)
    cmd = [*prefix, "-m", "tvm.exec.rpc_server", "--tracker", f"{tracker[0]}:{tracker[1]}"]
    cmd += ["--key", key, "--host", host, "--port", str(port), "--port-end", str(port + 1)]
    proc = spawn(cmd, log, env=env)
    return BoardHandle(
        key=key, cpu=cpu, port=port, pid=proc.pid, tracker=tracker, log=log, proc=proc
    )


def _wait_registered(handles: list[BoardHandle], timeout_s: float, progress: bool) -> None:
    """Wait until every board in `handles` is registered at its tracker; stop all on failure."""
    start = time.monotonic()
    next_message = start + PROGRESS_PERIOD_S
    pending = list(handles)
    try:
        while pending:
            for handle in list(pending):
                summary = tracker_summary(*handle.tracker)
                if any(p == handle.port for _, p in registered_servers(summary, handle.key)):
                    pending.remove(handle)
                elif handle.proc is not None and handle.proc.poll() is not None:
                    raise UserError(
                        f"board {handle.key!r} exited during start-up: {log_tail(handle.log)}"
                    )
            now = time.monotonic()
            if pending and now - start > timeout_s:
                raise UserError(
                    f"board {pending[0].key!r} did not register at the tracker within "
                    f"{timeout_s:g} s; log {pending[0].log}: {log_tail(pending[0].log)}"
                )
            if pending and now >= next_message:
                say(progress, f"{len(pending)} board(s) still starting ({now - start:.0f} s)")
                next_message = now + PROGRESS_PERIOD_S
            if pending:
                time.sleep(0.5)
    except BaseException:
        for handle in handles:
            handle.stop()
        raise
    say(progress, f"{len(handles)} board(s) up after {time.monotonic() - start:.0f} s")


def start_boards(
    key: str,
    count: int = 1,
    cpu: str = DEFAULT_CPU,
    tracker: tuple[str, int] = DEFAULT_TRACKER,
    host: str = "127.0.0.1",
    timeout_s: float = 240.0,
    progress: bool = True,
    board: BoardRoot | None = None,
) -> list[BoardHandle]:
    """Start `count` emulated boards under one `key` (a pool) and wait until all are registered."""
    _check_args(cpu, count)
    board = board or ensure_board_root(progress=progress)
    tracker_summary(*tracker)  # fail early if the tracker is unreachable
    say(
        progress,
        f"starting {count} emulated {cpu} board(s) (qemu -cpu {qemu_cpu(cpu)}) with key {key!r} at tracker "
        f"{tracker[0]}:{tracker[1]} (importing tvm under qemu takes ~10-30 s)",
    )
    handles = [_spawn_board(board, key, cpu, tracker, host) for _ in range(count)]
    _wait_registered(handles, timeout_s, progress)
    return handles


def start_board(
    key: str,
    cpu: str = DEFAULT_CPU,
    tracker: tuple[str, int] = DEFAULT_TRACKER,
    host: str = "127.0.0.1",
    timeout_s: float = 240.0,
    progress: bool = True,
) -> BoardHandle:
    """Start one emulated board registered at `tracker` under `key` and wait until it is free."""
    return start_boards(key, 1, cpu, tracker, host, timeout_s, progress)[0]


# --- detached boards (`tvm-conformer board up/down/status`) -----------------------------------


def _create_time(pid: int) -> float:
    import psutil

    return float(psutil.Process(pid).create_time())


def _alive(entry: dict[str, Any]) -> bool:
    """Whether the process recorded in `entry` still runs (same pid and start time)."""
    import psutil

    try:
        proc = psutil.Process(entry["pid"])
        return abs(proc.create_time() - entry["create_time"]) < 0.5 and proc.status() != "zombie"
    except psutil.NoSuchProcess:
        return False


def _state_path() -> Path:
    return _board_dir(None) / "state.json"


@contextmanager
def _state() -> Iterator[dict[str, Any]]:
    """The state file (tracker and boards, dead entries pruned) under a lock; saved on exit."""
    path = _state_path()
    with _locked(path.with_suffix(".lock")):
        state = json.loads(path.read_text()) if path.is_file() else {}
        tracker = state.get("tracker")
        state["tracker"] = tracker if tracker and _alive(tracker) else None
        state["boards"] = [b for b in state.get("boards", []) if _alive(b)]
        yield state
        path.write_text(json.dumps(state, indent=1) + "\n")


def _record(handle: TrackerHandle | BoardHandle) -> dict[str, Any]:
    entry = {f.name: getattr(handle, f.name) for f in fields(handle) if f.name != "proc"}
    entry["log"] = str(handle.log)
    entry["create_time"] = _create_time(handle.pid)
    return entry


@dataclass(frozen=True)
class BoardsUp:
    """What `board_up` started: the tracker address and the boards."""

    tracker: tuple[str, int]
    boards: list[BoardHandle]


def board_up(
    key: str | None = None,
    cpu: str = DEFAULT_CPU,
    tracker: tuple[str, int] | None = None,
    count: int = 1,
    progress: bool = True,
) -> BoardsUp:
    """Start detached boards (key default `qemu-<cpu>`), and a tracker unless one is given or running."""
    _check_args(cpu, count)
    key = key or f"qemu-{cpu}"
    board = ensure_board_root(progress=progress)
    with _state() as state:
        if tracker is None and state["tracker"] is not None:
            tracker = (state["tracker"]["host"], state["tracker"]["port"])
            say(progress, f"using the running tracker {tracker[0]}:{tracker[1]}")
        elif tracker is None:
            started = start_tracker(*DEFAULT_TRACKER, progress=progress)
            state["tracker"] = _record(started)
            tracker = started.address
        elif not tracker_reachable(*tracker):
            raise UserError(f"no RPC tracker answers at {tracker[0]}:{tracker[1]}")
    # The state stays unlocked while the boards start, so `board status` answers meanwhile.
    handles = start_boards(key, count, cpu, tracker, progress=progress, board=board)
    with _state() as state:
        state["boards"] += [_record(h) for h in handles]
    return BoardsUp(tracker=tracker, boards=handles)


def board_down(key: str | None = None, progress: bool = True) -> int:
    """Stop the detached boards (only those with `key` if given; else all and our tracker)."""
    stopped = 0
    with _state() as state:
        keep = []
        for entry in state["boards"]:
            if key is None or entry["key"] == key:
                say(progress, f"stopping board {entry['key']!r} (pid {entry['pid']})")
                stop_group(entry["pid"])
                stopped += 1
            else:
                keep.append(entry)
        state["boards"] = keep
        if key is None and state["tracker"] is not None:
            t = state["tracker"]
            say(progress, f"stopping the tracker {t['host']}:{t['port']} (pid {t['pid']})")
            stop_group(t["pid"])
            state["tracker"] = None
    return stopped


def board_status(trackers: Sequence[tuple[str, int]] = ()) -> str:
    """A text report of the detached tracker and boards and of what each tracker sees.

    `trackers` adds trackers to query besides those recorded by `board_up`.
    """
    with _state() as state:
        tracker, boards = state["tracker"], state["boards"]
    lines = []
    if tracker is not None:
        lines.append(f"tracker  {tracker['host']}:{tracker['port']}  pid {tracker['pid']}")
    else:
        lines.append("tracker  none running (started by `tvm-conformer board up`)")
    for b in boards:
        t = b["tracker"]
        lines.append(
            f"board    key {b['key']}  cpu {b['cpu']}  rpc {b['port']}  pid {b['pid']}  "
            f"tracker {t[0]}:{t[1]}"
        )
    if not boards:
        lines.append("board    none running (start one with `tvm-conformer board up`)")
    addresses = {(b["tracker"][0], b["tracker"][1]) for b in boards} | set(trackers)
    if tracker is not None:
        addresses.add((tracker["host"], tracker["port"]))
    for host, port in sorted(addresses):
        if tracker_reachable(host, port):
            from tvm import rpc

            session = rpc.connect_tracker(host, port)
            try:
                lines += ["", f"tracker {host}:{port} reports:", session.text_summary().rstrip()]
            finally:
                session.close()
        else:
            lines += ["", f"tracker {host}:{port} does not answer"]
    return "\n".join(lines)
