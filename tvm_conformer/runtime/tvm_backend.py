"""The step on a compiled artifact in this process; caches stay on the TVM device."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from tvm_conformer.compiler.artifact import LIB, WEIGHTS, load_weights, read_manifest
from tvm_conformer.compiler.compat import check_runs_here
from tvm_conformer.errors import UserError
from tvm_conformer.model import ModelConfig
from tvm_conformer.paths import cache_dir
from tvm_conformer.runtime.weights import upload_weights
from tvm_conformer.threads import available_cpus, set_threads


class TVMBackend:
    """Runs `main` of an artifact's VM; weights are uploaded once, caches never leave the device.

    No device memory is allocated per step once the first steps have run: the chunk and the mask
    are copied into buffers allocated once, the VM's intermediates live in storage planned at
    compile time, and its outputs come from its pooled allocator, which takes back the previous
    step's caches when they are dropped (tests/test_build.py counts the allocations)."""

    name = "tvm"

    def __init__(self, vm, dev, weights, config: ModelConfig, manifest: dict) -> None:  # noqa: ANN001
        self.vm, self.dev, self.weights = vm, dev, weights
        self.config = config
        self.manifest = manifest
        self._main = vm["main"]
        self._inputs: dict[str, object] = {}  # name -> device buffer, allocated on first use

    @classmethod
    def load(
        cls, art_dir: str | Path, threads: int | None = None, expect_model: str | Path | None = None
    ) -> TVMBackend:
        """Loads after checking hashes, architecture and (with `expect_model`) the checkpoint."""
        import tvm
        from tvm import relax

        from tvm_conformer.compiler.artifact import sha256_file

        art = Path(art_dir)
        manifest = read_manifest(art)
        check_runs_here(manifest, art)
        if expect_model is not None and sha256_file(expect_model) != manifest["model"]["checkpoint_sha256"]:
            raise UserError(
                f"{art} was compiled from {manifest['model']['checkpoint']}, not from {expect_model}: "
                f"recompile with `tvm-conformer compile --model {expect_model}`"
            )
        # the thread count it was built for, on no more threads than this process may use
        set_threads(threads or min(manifest["target"]["threads"], available_cpus()))
        dev = tvm.cpu()
        vm = relax.VirtualMachine(tvm.runtime.load_module(str(art / LIB)), dev)
        weights = upload_weights(load_weights(art / WEIGHTS), dev)
        if len(weights) != manifest["io"]["weights"]:
            raise UserError(f"{art}: {WEIGHTS} has {len(weights)} arrays, the library takes "
                            f"{manifest['io']['weights']}; rebuild with `tvm-conformer compile`")
        if manifest["model"].get("kind") == "onnx-contract":  # sherpa-onnx's streaming loop
            from tvm_conformer.runtime.contract import TVMContractBackend

            return TVMContractBackend(vm, dev, weights, manifest)
        return cls(vm, dev, weights, ModelConfig(**manifest["model"]["config"]), manifest)

    def initial_state(self):  # noqa: ANN201
        import tvm

        cfg = self.config
        att = np.zeros((cfg.n_layers, 2, cfg.left_frames, cfg.d_model), np.float32)
        cnn = np.zeros((cfg.n_layers, cfg.d_model, cfg.conv_kernel - 1), np.float32)
        return tvm.runtime.tensor(att, self.dev), tvm.runtime.tensor(cnn, self.dev)

    def step(self, state, feats, att_mask):  # noqa: ANN001, ANN201
        att, cnn = state
        out = self._main(self._input("feats", feats), att, cnn, self._input("mask", att_mask),
                         *self.weights)
        return out[0].numpy()[0], (out[1], out[2])

    def _input(self, name: str, value: np.ndarray):  # noqa: ANN202
        import tvm

        buf = self._inputs.get(name)
        if buf is None or tuple(buf.shape) != value.shape:
            buf = self._inputs[name] = tvm.runtime.empty(value.shape, "float32", self.dev)
        return buf.copyfrom(np.ascontiguousarray(value, np.float32))


def host_artifact(model: str | Path, tokens: str | Path | None = None) -> Path:
    """The cached host build of `model`, compiled on first use (with a visible message)."""
    from tvm_conformer.compiler.artifact import build_key, sha256_file
    from tvm_conformer.compiler.compile import compile_artifact
    from tvm_conformer.compiler.pipeline import PipelineOptions
    from tvm_conformer.paths import TUNING_LOGS_DIR
    from tvm_conformer.targets import load_target

    device = load_target("host")
    opts = PipelineOptions(family=device.family).with_default_threads(device.threads)
    inputs = opts.to_dict()
    if tokens is not None or str(model).endswith(".onnx"):  # a contract model: its tokens too
        tok = Path(tokens) if tokens else Path(model).parent / "tokens.txt"
        inputs["tokens"] = sha256_file(tok) if tok.is_file() else "no-tokens"
    # everything the build depends on: the checkpoint, the build code, the target file, this
    # CPU, the versions, the options and the host database it may apply
    key = build_key(model, device, inputs, TUNING_LOGS_DIR / "host")
    art = cache_dir() / "artifacts" / f"host-{key}"
    if not (art / "manifest.json").is_file():
        print(f"compiling {model} for the host (first use; cached in {art})", file=sys.stderr)
        compile_artifact(art, device, model, opts=opts, tokens=tokens)
    return art
