"""Deploy an artifact to a device over TVM RPC and run the streaming step there.

    backend = make_rpc_backend("build/wearable-a55-fp32", "qemu-cortex-a55", "127.0.0.1:9190")
    rec = OnlineRecognizer(backend)  # features and CTC decoding on the host, the step on the device

The device is requested from a tracker. Its architecture is compared with the artifact's before
anything is uploaded (`device.py`); the library is uploaded and loaded, the weights are uploaded
once, and the attention and convolution caches stay on the device: a step's output tensors are
the next step's inputs, only the features go up and the log-probs come back. Every remote
operation runs under the watchdog of `watchdog.py`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tvm_conformer.compiler.artifact import LIB, WEIGHTS, load_weights, read_manifest
from tvm_conformer.compiler.compat import library_arch
from tvm_conformer.errors import UserError
from tvm_conformer.model import ModelConfig
from tvm_conformer.rpc.address import DEFAULT_TRACKER, parse_tracker
from tvm_conformer.rpc.device import DeviceInfo, probe_device
from tvm_conformer.rpc.tracker import registered_servers, request_device, say, tracker_summary
from tvm_conformer.rpc.watchdog import remote_operation, sever
from tvm_conformer.runtime.contract import TVMContractBackend, is_contract_manifest
from tvm_conformer.runtime.tvm_backend import TVMBackend

DEFAULT_TIMEOUT_S = 120.0


@dataclass
class StepTiming:
    """One step's times in seconds; `DEFINITIONS` in results.py says what each covers."""

    step_s: float
    invoke_s: float
    device_s: float | None


class _OnDevice:
    """What both step kinds on a device share: the watchdog, the timings, the end of a session."""

    def _on_device(self, session: Any, device: DeviceInfo, servers: list[tuple[str, int]],
                   timeout_s: float, device_timing: bool) -> None:
        self.session, self.device = session, device
        self.servers, self.timeout_s = servers, timeout_s
        self._timer = (self.vm.time_evaluator("invoke_stateful", self.dev, number=1, repeat=1)
                       if device_timing else None)
        self.timings: list[StepTiming] = []
        self.load_seconds: dict[str, float] = {}

    def remote(self, what: str) -> Any:
        """The watchdog and error translation for one remote operation on this device."""
        return remote_operation(self.device.key, what, self.timeout_s, self.servers)

    def initial_state(self):  # noqa: ANN201 - the step's caches, allocated on the device
        with self.remote("allocating the caches"):
            return super().initial_state()

    def _running(self) -> Any:  # noqa: ANN401
        return self.remote(f"running step {len(self.timings) + 1}")

    def _invoke(self, t0: float, inputs: list) -> tuple[np.ndarray, Any, Any]:
        """One step on the device from its input tensors there (copied in since `t0`), inside
        `_running()`: (log-probs on the host, the two caches left on the device)."""
        t1 = time.perf_counter()
        self.vm.set_input("main", *inputs, *self.weights)
        self.vm.invoke_stateful("main")
        t2 = time.perf_counter()
        log_probs, cache_a, cache_b = self.vm.get_outputs("main")
        out = log_probs.numpy()[0]
        t3 = time.perf_counter()
        device_s = float(self._timer("main").mean) if self._timer is not None else None
        self.timings.append(StepTiming(t3 - t0, t2 - t1, device_s))
        return out, cache_a, cache_b

    def close(self) -> None:
        """End the session, which frees the device at the tracker. Tensors of this session
        still held elsewhere (e.g. a stream's caches) become unusable."""
        self.vm = self.weights = self._timer = self.session = None
        self._release()
        # the session lives as long as any of its remote objects: cut it off explicitly
        sever(self.servers)

    def _release(self) -> None:
        pass


class RPCBackend(_OnDevice, TVMBackend):
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

        self._on_device(session, device, servers, timeout_s, device_timing)
        cfg = self.config
        # input buffers on the device, refilled each step: one copy per input instead of an
        # allocation and a copy
        with self.remote("allocating the inputs"):
            self._feats = tvm.runtime.empty((1, cfg.chunk_input_frames, cfg.n_mels), "float32", dev)
            self._mask = tvm.runtime.empty((1, cfg.left_frames + cfg.chunk_size), "float32", dev)

    def step(self, state, feats, att_mask):  # noqa: ANN001, ANN201
        att, cnn = state
        with self._running():
            t0 = time.perf_counter()
            self._feats.copyfrom(feats)
            self._mask.copyfrom(att_mask)
            out, new_att, new_cnn = self._invoke(t0, [self._feats, att, cnn, self._mask])
        return out, (new_att, new_cnn)

    def _release(self) -> None:
        self._feats = self._mask = None


class RPCContractBackend(_OnDevice, TVMContractBackend):
    """The step of a contract artifact (runtime/contract.py: sherpa-onnx's loop on the host)
    on a remote device; weights and caches stay on the device, as for RPCBackend."""

    name = "rpc"

    def __init__(self, session: Any, vm: Any, dev: Any, weights: list, manifest: dict,
                 device: DeviceInfo, servers: list[tuple[str, int]], timeout_s: float,
                 device_timing: bool) -> None:
        super().__init__(vm, dev, weights, manifest)
        self._on_device(session, device, servers, timeout_s, device_timing)

    def step(self, state, x, mask):  # noqa: ANN001, ANN201
        offset, att, conv = state
        with self._running():
            t0 = time.perf_counter()
            lp, att, conv = self._invoke(t0, self._inputs(offset, att, conv, x, mask))
        return lp, (offset + lp.shape[0], att, conv)

    def _release(self) -> None:
        self._bufs = {}


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
    kind = RPCContractBackend if is_contract_manifest(manifest) else RPCBackend
    backend = kind(session, vm, dev, weights, manifest, device, servers, timeout_s, device_timing)
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
    want = library_arch(art)  # what its lib.so is, whatever the manifest says
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
        sever(servers)
        raise
