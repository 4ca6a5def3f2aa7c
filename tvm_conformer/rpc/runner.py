"""Deploy an artifact to a device over TVM RPC, run the streaming step there, benchmark it.

    backend = make_rpc_backend("build/wearable-a55-fp32", "qemu-cortex-a55", "127.0.0.1:9190")
    rec = OnlineRecognizer(backend)  # features and CTC decoding on the host, the step on the device

    record = bench_rpc("build/wearable-a55-fp32", "qemu-cortex-a55")  # appended to the results

The device is requested from a tracker. Its architecture is compared with the artifact's before
anything is uploaded; the library is uploaded and loaded, the weights are uploaded once, and the
attention and convolution caches stay on the device: a step's output tensors are the next step's
inputs, only the features go up and the log-probs come back.

Every remote operation runs under a watchdog: when it takes longer than the timeout, the
watchdog shuts our TCP connection to the device down, which ends the blocked call; a device that
hangs or disconnects thus ends in a one-line DeviceError, never in a hang.

What the device says about itself (`probe_device`): the stock RPC servers have no "what machine
is this" call, so the architecture comes from the device's own LLVM (`target.llvm_get_system_triple`:
the triple its TVM library was built for, i.e. the architecture of the process serving us) and
the CPU from LLVM's host-CPU detection on the device (`target.llvm_get_system_cpu`, which reads
the device's /proc/cpuinfo). A device whose TVM runtime has no LLVM (the Android RPC app, a
runtime-only build) reports neither; its architecture is then not checked, and the run says so.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tvm_conformer.compiler.artifact import (
    LIB,
    MANIFEST,
    WEIGHTS,
    load_weights,
    read_manifest,
    sha256_file,
)
from tvm_conformer.errors import UserError
from tvm_conformer.model import ModelConfig
from tvm_conformer.paths import ASSETS_DIR, DEFAULT_CHECKPOINT, DEFAULT_RECORDING, REPO_DIR
from tvm_conformer.rpc.results import DEFAULT_RESULTS, DEFINITIONS, append_result, summarize
from tvm_conformer.rpc.tracker import registered_servers, request_device, say, tracker_summary
from tvm_conformer.runtime.tvm_backend import TVMBackend

DEFAULT_TRACKER = "127.0.0.1:9190"
DEFAULT_TIMEOUT_S = 120.0
TOLERANCE = 1e-4  # max |log-prob difference| allowed between the device and the host
EMULATION_LABEL = "emulation (qemu), not device timings"
DEVICE_LABEL = "device timings"
# Names of one architecture in LLVM triples and in `uname -m`.
_ARCH_ALIASES = {"arm64": "aarch64", "amd64": "x86_64", "x86-64": "x86_64"}


class DeviceError(UserError):
    """The device failed, disconnected or stopped answering during a remote operation."""


def parse_tracker(tracker: str | tuple[str, int]) -> tuple[str, int]:
    """`"HOST:PORT"` (or a `(host, port)` pair) as `(host, port)`; UserError if malformed."""
    if isinstance(tracker, tuple):
        return tracker
    host, sep, port = tracker.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise UserError(f"--tracker expects HOST:PORT (e.g. {DEFAULT_TRACKER}), got {tracker!r}")
    return host, int(port)


def normalize_arch(name: str) -> str:
    """One name per architecture: `arm64` -> `aarch64`, `armv7a`/`armv7l` -> `arm`, ..."""
    name = _ARCH_ALIASES.get(name.lower(), name.lower())
    return "arm" if name.startswith("arm") else name


def artifact_arch(manifest: dict) -> str:
    """The architecture an artifact's host code runs on: its target's (or host target's) triple,
    else the machine it was built on (a `host` build has no triple)."""
    target = manifest["target"]
    for tvm_target in (target["tvm"], target.get("host") or {}):
        if tvm_target.get("mtriple"):
            return normalize_arch(tvm_target["mtriple"].split("-")[0])
    return normalize_arch(manifest["built_on"]["machine"])


@dataclass(frozen=True)
class DeviceInfo:
    """What is known about the device behind a session, and where each fact comes from."""

    key: str
    tracker: str
    arch: str | None  # None: the device does not say (then not checked)
    arch_source: str
    cpu: str
    threads: int | None  # the device runtime's default thread-pool size (the cores it sees)
    emulated: bool
    emulation_evidence: str  # why it counts as emulated ("" when nothing says so)

    @property
    def label(self) -> str:
        return EMULATION_LABEL if self.emulated else DEVICE_LABEL

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "label": self.label}


def _resolve(host: str) -> str:
    try:
        return socket.gethostbyname(host)
    except OSError:
        return host


def _our_connections(servers: list[tuple[str, int]]) -> list[Any]:
    """This process's TCP connections to any of `servers` (psutil connection tuples)."""
    import psutil

    wanted = {(_resolve(host), port) for host, port in servers}
    return [c for c in psutil.Process().net_connections(kind="tcp")
            if c.raddr and (c.raddr.ip, c.raddr.port) in wanted]


def _sever(servers: list[tuple[str, int]]) -> None:
    """Shut down our connections to `servers`: a call blocked reading from them returns."""
    for conn in _our_connections(servers):
        try:
            with socket.socket(fileno=os.dup(conn.fd)) as sock:
                sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed


@contextmanager
def remote_operation(key: str, what: str, timeout_s: float,
                     servers: list[tuple[str, int]]) -> Iterator[None]:
    """Run a remote operation on device `key` (reachable at `servers`): a failure becomes a
    one-line DeviceError naming `what`, and so does taking longer than `timeout_s` (> 0)."""
    expired = threading.Event()

    def fire() -> None:
        expired.set()
        _sever(servers)

    timer = threading.Timer(timeout_s, fire) if timeout_s > 0 else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    try:
        yield
    except UserError:
        raise
    except (RuntimeError, OSError) as exc:
        if expired.is_set():
            raise DeviceError(_timeout_message(key, what, timeout_s)) from None
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        detail = lines[-1][:200] if lines else ""
        raise DeviceError(
            f"device {key!r} failed while {what} ({type(exc).__name__}: {detail}); it may have "
            "disconnected or crashed: check its RPC server and run again"
        ) from None
    finally:
        if timer is not None:
            timer.cancel()
    if expired.is_set():  # finished just as the watchdog cut the connection
        raise DeviceError(_timeout_message(key, what, timeout_s))


def _timeout_message(key: str, what: str, timeout_s: float) -> str:
    return (f"device {key!r} did not answer within {timeout_s:g} s while {what}: it hangs or is "
            "overloaded; check it and run again (or raise --timeout)")


def _remote_string(session: Any, name: str) -> str | None:
    """`name()` on the device, or None when the device's runtime has no such function."""
    try:
        return str(session.get_function(name)())
    except (AttributeError, RuntimeError):
        return None


def _local_qemu_servers(servers: list[tuple[str, int]]) -> list[list[str]]:
    """Command lines of qemu processes on this machine listening at one of `servers`."""
    import psutil

    ports = {port for host, port in servers if _resolve(host).startswith("127.")}
    found = []
    for conn in psutil.net_connections(kind="tcp") if ports else []:
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port in ports and conn.pid:
            try:
                cmd = psutil.Process(conn.pid).cmdline()
            except psutil.Error:
                continue
            if cmd and "qemu" in Path(cmd[0]).name:
                found.append(cmd)
    return found


def emulation_evidence(key: str, servers: list[tuple[str, int]]) -> str:
    """Why device `key` is an emulated board ("" if nothing says so): an RPC server under `key`
    that is a qemu process on this machine (any board of `start_board`, whatever its key), or
    the key of a board started by `tvm-conformer board up` (`qemu-CPU`)."""
    qemu = _local_qemu_servers(servers)
    if qemu:
        cmd = qemu[0]
        cpu = cmd[cmd.index("-cpu") + 1] if "-cpu" in cmd[:-1] else "its default core"
        return f"its RPC server is a local {Path(cmd[0]).name} process emulating {cpu}"
    if key.startswith("qemu"):
        return f"the key {key!r} names a board of `tvm-conformer board up`"
    return ""


def probe_device(session: Any, key: str, tracker: tuple[str, int],
                 servers: list[tuple[str, int]]) -> DeviceInfo:
    """Ask the device for its architecture and CPU, and tell whether it is emulated."""
    triple = _remote_string(session, "target.llvm_get_system_triple")
    cpu = _remote_string(session, "target.llvm_get_system_cpu")
    threads = _remote_string(session, "runtime.NumThreads")
    if triple:
        arch, source = normalize_arch(triple.split("-")[0]), f"the device's LLVM triple {triple}"
    else:
        arch, source = None, "not reported (the device's TVM runtime has no LLVM)"
    cpu_text = f"{cpu} (LLVM host-CPU detection on the device)" if cpu else "not reported"
    evidence = emulation_evidence(key, servers)
    return DeviceInfo(key, f"{tracker[0]}:{tracker[1]}", arch, source, cpu_text,
                      int(threads) if threads else None, bool(evidence), evidence)


@dataclass
class StepTiming:
    """One step's times in seconds; `DEFINITIONS` in results.py says what each covers."""

    step_s: float
    invoke_s: float
    device_s: float | None


class RPCBackend(TVMBackend):
    """The step of an artifact on a remote device; weights and caches stay on the device.

    `timings` gets one StepTiming per step. With `device_timing`, `time_evaluator` also times
    each step on the device, which runs the step twice more (its warm-up and the timed run).
    """

    name = "rpc"

    def __init__(self, session: Any, vm: Any, dev: Any, weights: list, manifest: dict,
                 device: DeviceInfo, servers: list[tuple[str, int]], timeout_s: float,
                 device_timing: bool) -> None:
        super().__init__(vm, dev, weights, ModelConfig(**manifest["model"]["config"]), manifest)
        import tvm

        self.session, self.device = session, device
        self.servers, self.timeout_s = servers, timeout_s
        cfg = self.config
        # input buffers on the device, refilled each step: one copy per input instead of an
        # allocation and a copy
        with self.remote("allocating the inputs"):
            self._feats = tvm.runtime.empty((1, cfg.chunk_input_frames, cfg.n_mels), "float32", dev)
            self._mask = tvm.runtime.empty((1, cfg.left_frames + cfg.chunk_size), "float32", dev)
        self._timer = (vm.time_evaluator("invoke_stateful", dev, number=1, repeat=1)
                       if device_timing else None)
        self.timings: list[StepTiming] = []
        self.load_seconds: dict[str, float] = {}

    def remote(self, what: str) -> Any:
        """The watchdog and error translation for one remote operation on this device."""
        return remote_operation(self.device.key, what, self.timeout_s, self.servers)

    def initial_state(self):  # noqa: ANN201 - (att_cache, cnn_cache) tensors on the device
        with self.remote("allocating the caches"):
            return super().initial_state()

    def step(self, state, feats, att_mask):  # noqa: ANN001, ANN201
        att, cnn = state
        with self.remote(f"running step {len(self.timings) + 1}"):
            t0 = time.perf_counter()
            self._feats.copyfrom(feats)
            self._mask.copyfrom(att_mask)
            self.vm.set_input("main", self._feats, att, cnn, self._mask, *self.weights)
            t1 = time.perf_counter()
            self.vm.invoke_stateful("main")
            t2 = time.perf_counter()
            log_probs, new_att, new_cnn = self.vm.get_outputs("main")
            out = log_probs.numpy()[0]
            t3 = time.perf_counter()
            device_s = float(self._timer("main").mean) if self._timer is not None else None
        self.timings.append(StepTiming(t3 - t0, t2 - t1, device_s))
        return out, (new_att, new_cnn)

    def close(self) -> None:
        """End the session, which frees the device at the tracker. Tensors of this session
        still held elsewhere (e.g. a stream's caches) become unusable."""
        self.vm = self.weights = self._timer = self._feats = self._mask = self.session = None
        # the session lives as long as any of its remote objects: cut it off explicitly
        _sever(self.servers)


def _deploy(session: Any, art: Path, manifest: dict, device: DeviceInfo,
            servers: list[tuple[str, int]], timeout_s: float, device_timing: bool,
            progress: bool) -> RPCBackend:
    """Upload and load the library, upload the weights, size the device's thread pool."""
    import tvm
    from tvm import relax

    def remote(what: str) -> Any:
        return remote_operation(device.key, what, timeout_s, servers)

    seconds = {}
    remote_name = f"tvm_conformer_{manifest['files'][LIB][:16]}.so"
    threads = int(manifest["target"].get("threads") or 1)
    say(progress, f"uploading {LIB} ({(art / LIB).stat().st_size / 1e6:.1f} MB) to {device.key!r}")
    t0 = time.perf_counter()
    with remote(f"uploading {LIB}"):
        session.upload(str(art / LIB), remote_name)
    seconds["upload_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    with remote(f"loading {LIB}"):
        dev = session.cpu()
        vm = relax.VirtualMachine(session.load_module(remote_name), dev)
        session.get_function("runtime.config_threadpool")(0, threads)
        # a pool cannot grow past the server's TVM_NUM_THREADS (unset: all cores on Arm, half
        # the logical CPUs on x86), whatever config_threadpool was asked
        running = int(session.get_function("runtime.NumThreads")())
    seconds["load_module_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    with remote(f"uploading {WEIGHTS}"):
        weights = [tvm.runtime.tensor(w, dev) for w in load_weights(art / WEIGHTS)]
    seconds["weights_s"] = time.perf_counter() - t0
    seconds["total_s"] = sum(seconds.values())
    backend = RPCBackend(session, vm, dev, weights, manifest, device, servers, timeout_s,
                         device_timing)
    backend.load_seconds = seconds
    capped = "" if running == threads else (
        f"; built for {threads}: start the device's RPC server with TVM_NUM_THREADS={threads}")
    say(progress, f"model loaded on {device.key!r} in {seconds['total_s']:.1f} s "
        f"({running} threads{capped})")
    return backend


def make_rpc_backend(
    artifact_dir: str | Path | None,
    key: str,
    tracker: str | tuple[str, int] = DEFAULT_TRACKER,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    progress: bool = True,
    device_timing: bool = False,
) -> RPCBackend:
    """Request device `key` from `tracker`, check its architecture, upload and load the artifact.

    `timeout_s` bounds the wait for a free device and each remote operation after it. Raises
    UserError when the artifact cannot run on the device (before uploading anything) and
    DeviceError when the device fails, disconnects or hangs.
    """
    if not artifact_dir:
        raise UserError("running on a device (--rpc-key) needs --artifact DIR: compile one with "
                        "`tvm-conformer compile --target NAME`, or use `tvm-conformer bench "
                        "--target NAME --rpc-key KEY`, which compiles it")
    art = Path(artifact_dir)
    manifest = read_manifest(art)
    want = artifact_arch(manifest)
    address = parse_tracker(tracker)
    servers = registered_servers(tracker_summary(*address), key)
    # waits up to timeout_s for a free device, then connects under the watchdog
    with remote_operation(key, "connecting", 2 * timeout_s, servers):
        session = request_device(*address, key, timeout_s=timeout_s, progress=progress)
    try:
        with remote_operation(key, "asking the device what it is", timeout_s, servers):
            device = probe_device(session, key, address, servers)
        if device.arch is None:
            say(progress, f"device {key!r} does not report its architecture: not checked")
        elif device.arch != want:
            raise UserError(
                f"{art} was built for {manifest['target']['name']} ({want}) but device {key!r} "
                f"is {device.arch} ({device.arch_source}); nothing was uploaded: compile for the "
                "device's architecture (`tvm-conformer compile --target NAME`)"
            )
        say(progress, f"device {key!r}: {device.arch or 'architecture unknown'}, CPU "
            f"{device.cpu}" + (f"; {device.label.upper()}: {device.emulation_evidence}"
                               if device.emulated else ""))
        return _deploy(session, art, manifest, device, servers, timeout_s, device_timing,
                       progress)
    except BaseException:
        # the traceback keeps the session alive, and with it the device busy: end it now
        _sever(servers)
        raise


def default_recordings() -> list[Path]:
    """The shipped recordings: sample.wav and test_utts/*.flac."""
    return [DEFAULT_RECORDING, *sorted((ASSETS_DIR / "test_utts").glob("*.flac"))]


def reference_backend(manifest: dict, model: str | Path | None = None):  # noqa: ANN201
    """PyTorch eager on the checkpoint the artifact was compiled from (`model` if given)."""
    from tvm_conformer.model import load_checkpoint
    from tvm_conformer.runtime.backend import TorchBackend

    path = Path(model or manifest["model"]["checkpoint"])
    if not path.is_file():
        raise UserError(f"the artifact was compiled from {path}, which is missing here; the host "
                        "reference needs it: pass --model PATH to a copy")
    if sha256_file(path) != manifest["model"]["checkpoint_sha256"]:
        raise UserError(f"{path} is not the checkpoint the artifact was compiled from (its "
                        "sha256 differs): pass --model PATH to that checkpoint, or recompile")
    return TorchBackend(load_checkpoint(path)[0])


def _check(reference: Any, samples: np.ndarray, sample_rate: int, device_run: Any) -> dict:
    """Device log-probs and transcript against the host's on the same recording."""
    from tvm_conformer.runtime.recognizer import OnlineRecognizer, transcribe_samples

    host = transcribe_samples(OnlineRecognizer(reference), samples, sample_rate)
    same_shape = host.log_probs.shape == device_run.log_probs.shape
    diff = (float(np.max(np.abs(host.log_probs - device_run.log_probs), initial=0.0))
            if same_shape else float("inf"))
    return {"reference": "PyTorch eager on the host", "max_abs_logp_diff": diff,
            "tolerance": TOLERANCE, "host_text": host.text, "device_text": device_run.text,
            "same_text": host.text == device_run.text,
            "passed": diff <= TOLERANCE and host.text == device_run.text}


def bench_rpc(
    artifact: str | Path,
    key: str,
    tracker: str | tuple[str, int] = DEFAULT_TRACKER,
    audio: list[str | Path] | None = None,
    results: str | Path = DEFAULT_RESULTS,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    model: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Stream each recording (default: the shipped ones) through the step on device `key`,
    caches on the device, and time every step; check the first recording against the host.

    Appends the run (the artifact's manifest included) to `results` (JSON lines), also when the
    device fails mid-run: then the record has `"partial": true` and the error, and the
    DeviceError is raised. A mismatch with the host (> TOLERANCE, or another transcript) is
    recorded and raised as UserError. Returns the record.
    """
    from tvm_conformer.audio.wav import load_audio
    from tvm_conformer.runtime.recognizer import OnlineRecognizer, transcribe_samples

    art = Path(artifact)
    manifest = read_manifest(art)
    files = [Path(a) for a in audio] if audio else default_recordings()
    reference = reference_backend(manifest, model)
    backend = make_rpc_backend(art, key, tracker, timeout_s, progress, device_timing=True)
    record: dict[str, Any] = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "label": backend.device.label,
        "device": backend.device.to_dict(),
        "artifact": {"path": str(art.resolve()), "lib_mb": (art / LIB).stat().st_size / 1e6,
                     "weights_mb": (art / WEIGHTS).stat().st_size / 1e6, "manifest": manifest},
        "load_s": backend.load_seconds,
        "definitions": DEFINITIONS,
        "recordings": [],
        "check": None,
        "partial": True,
        "error": None,
    }
    try:
        for i, path in enumerate(files):
            samples, sr = load_audio(path)
            run: dict[str, Any] = {"file": str(path), "audio_s": len(samples) / sr,
                                   "complete": False, "text": None}
            record["recordings"].append(run)
            first = len(backend.timings)
            try:
                tr = transcribe_samples(OnlineRecognizer(backend), samples, sr)
            finally:
                steps = backend.timings[first:]
                run["step_ms"] = [round(1e3 * t.step_s, 4) for t in steps]
                run["invoke_ms"] = [round(1e3 * t.invoke_s, 4) for t in steps]
                run["device_ms"] = [round(1e3 * t.device_s, 4) for t in steps
                                    if t.device_s is not None]
            run.update(complete=True, text=tr.text)
            say(progress, f"[{i + 1}/{len(files)}] {path.name}: {len(steps)} chunks, "
                f"{tr.audio_seconds:.1f} s of audio: {tr.text!r}")
            if i == 0:
                record["check"] = _check(reference, samples, sr, tr)
                if not record["check"]["passed"]:
                    c = record["check"]
                    raise UserError(
                        f"the device's output differs from the host's on {path.name}: max "
                        f"|dlogp| {c['max_abs_logp_diff']:.2e} (tolerance {TOLERANCE:g}), "
                        f"transcripts {'equal' if c['same_text'] else 'differ'}: the build for "
                        f"{manifest['target']['name']} computes something else"
                    )
        record["partial"] = False
    except UserError as exc:
        record["error"] = str(exc)
        raise type(exc)(f"{exc}; the run so far is in {results} (partial)") from None
    finally:
        record["summary"] = summarize(record["recordings"])
        append_result(results, record)
        backend.close()
    return record


def artifact_for(target: str | None, artifact: str | Path | None, model: str | Path | None,
                 progress: bool = True) -> Path:
    """The artifact to deploy: `artifact` if it holds one (built for `target` when given), else
    one compiled for `target` from `model` (default: the shipped checkpoint) into `artifact`
    (default build/TARGET-fp32, where `tvm-conformer compile --target TARGET` puts it) with
    that command's defaults; a build there of the same checkpoint, target and TVM is reused."""
    import tvm

    from tvm_conformer.compiler.compile import compile_artifact
    from tvm_conformer.compiler.pipeline import GRAPH_PASSES, PipelineOptions
    from tvm_conformer.targets import load_target

    if target is None:
        if artifact is None:
            raise UserError("pass --target NAME (compiled for it) or --artifact DIR (a build)")
        return Path(artifact)
    out = Path(artifact) if artifact else REPO_DIR / "build" / f"{target}-fp32"
    checkpoint = Path(model or DEFAULT_CHECKPOINT)
    if (out / MANIFEST).is_file():
        manifest = read_manifest(out)
        built_for = manifest["target"]["name"]
        if artifact and built_for != target:
            raise UserError(f"{out} was built for {built_for}, not {target}: pass --target "
                            f"{built_for}, or another --artifact DIR to compile into")
        if (built_for == target and manifest["tvm_version"] == tvm.__version__
                and (not checkpoint.is_file()
                     or sha256_file(checkpoint) == manifest["model"]["checkpoint_sha256"])):
            say(progress, f"using the build in {out} ({manifest['created']}; delete it to rebuild)")
            return out
    say(progress, f"compiling {checkpoint} for {target} into {out}")
    device = load_target(target)
    compile_artifact(out, device, checkpoint,
                     opts=PipelineOptions(family=device.family, passes=GRAPH_PASSES))
    return out
