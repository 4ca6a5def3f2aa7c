"""PyTorch -> Relax -> host artifact: numbers equal PyTorch's; bad artifacts are refused."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tvm_conformer.compiler.artifact import LIB, MANIFEST
from tvm_conformer.compiler.compile import compile_artifact
from tvm_conformer.errors import UserError
from tvm_conformer.model import load_checkpoint
from tvm_conformer.runtime.tvm_backend import TVMBackend


def _random_step_inputs(cfg, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    feats = rng.standard_normal((1, cfg.chunk_input_frames, cfg.n_mels)).astype(np.float32) * 3 + 8
    att = rng.standard_normal((cfg.n_layers, 2, cfg.left_frames, cfg.d_model)).astype(np.float32)
    cnn = rng.standard_normal((cfg.n_layers, cfg.d_model, cfg.conv_kernel - 1)).astype(np.float32)
    mask = np.ones((1, cfg.left_frames + cfg.chunk_size), np.float32)
    mask[0, : cfg.left_frames // 2] = 0  # half of the cache not yet filled
    mask[0, -1] = 0  # a padded last frame
    return [feats, att, cnn, mask]


@pytest.fixture(scope="module")
def host_artifacts(tiny_checkpoint: Path, tmp_path_factory) -> dict[str, Path]:
    out = {}
    for frontend in ("torch", "onnx"):
        art = tmp_path_factory.mktemp(f"art-{frontend}")
        compile_artifact(art, "host", tiny_checkpoint, frontend=frontend, quiet=True)
        out[frontend] = art
    return out


@pytest.mark.slow  # compiles artifacts (host_artifacts: two per module)
@pytest.mark.parametrize("frontend", ["torch", "onnx"])
def test_artifact_step_matches_pytorch(host_artifacts, tiny_checkpoint, frontend):
    model, _ = load_checkpoint(tiny_checkpoint)
    backend = TVMBackend.load(host_artifacts[frontend])
    feats, att, cnn, mask = _random_step_inputs(model.cfg)
    state = backend.initial_state()
    import tvm

    state = (tvm.runtime.tensor(att), tvm.runtime.tensor(cnn))
    lp, (new_att, new_cnn) = backend.step(state, feats, mask)
    with torch.no_grad():
        ref = model.forward_chunk(*(torch.from_numpy(a) for a in (feats, att, cnn, mask)))
    np.testing.assert_allclose(lp, ref[0][0].numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(new_att.numpy(), ref[1].numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(new_cnn.numpy(), ref[2].numpy(), atol=1e-4, rtol=0)


@pytest.mark.slow  # compiles artifacts (host_artifacts: two per module)
def test_manifest_records_what_was_built(host_artifacts, tiny_checkpoint):
    manifest = json.loads((host_artifacts["torch"] / MANIFEST).read_text())
    model, _ = load_checkpoint(tiny_checkpoint)
    assert manifest["model"]["config_hash"] == model.cfg.hash()
    assert manifest["target"]["name"] == "host"
    assert manifest["frontend"] == "torch"
    assert manifest["kernels"]["count"] > 0
    assert set(manifest["files"]) == {"lib.so", "weights.npz"}
    import tvm

    assert manifest["tvm_version"] == tvm.__version__


@pytest.mark.slow  # compiles artifacts (host_artifacts: two per module)
def test_fresh_process_loads_and_runs_the_artifact(host_artifacts, tiny_checkpoint, tmp_path):
    """A new process (nothing of this one's TVM state) loads the artifact and computes what
    PyTorch computes for the step, caches included."""
    model, _ = load_checkpoint(tiny_checkpoint)
    inputs = _random_step_inputs(model.cfg, seed=3)
    np.savez(tmp_path / "in.npz", *inputs)
    code = (
        "import sys, numpy as np, tvm\n"
        "from tvm_conformer.runtime.tvm_backend import TVMBackend\n"
        "b = TVMBackend.load(sys.argv[1])\n"
        "with np.load(sys.argv[2]) as z: f, att, cnn, m = (z[f'arr_{i}'] for i in range(4))\n"
        "lp, (att, cnn) = b.step((tvm.runtime.tensor(att), tvm.runtime.tensor(cnn)), f, m)\n"
        "np.savez(sys.argv[3], lp, att.numpy(), cnn.numpy())\n"
    )
    subprocess.run([sys.executable, "-c", code, str(host_artifacts["torch"]), str(tmp_path / "in.npz"),
                    str(tmp_path / "out.npz")], capture_output=True, text=True, check=True)
    with torch.no_grad():
        ref = model.forward_chunk(*(torch.from_numpy(a) for a in inputs))
    with np.load(tmp_path / "out.npz") as z:
        got = [z[f"arr_{i}"] for i in range(3)]
    for g, r in zip(got, (ref[0][0], ref[1], ref[2]), strict=True):
        np.testing.assert_allclose(g, r.numpy(), atol=1e-4, rtol=0)


@pytest.mark.slow  # compiles artifacts (host_artifacts: two per module)
def test_tampered_library_is_refused(host_artifacts, tmp_path):
    art = tmp_path / "art"
    shutil.copytree(host_artifacts["torch"], art)
    with open(art / LIB, "r+b") as f:
        f.seek(200)
        f.write(b"\x00\x01\x02\x03")
    with pytest.raises(UserError, match="does not match its manifest hash"):
        TVMBackend.load(art)


@pytest.mark.slow  # compiles artifacts (host_artifacts: two per module)
def test_artifact_for_another_architecture_is_refused(host_artifacts, tmp_path):
    art = tmp_path / "art"
    shutil.copytree(host_artifacts["torch"], art)
    manifest = json.loads((art / MANIFEST).read_text())
    manifest["target"]["tvm"]["mtriple"] = "aarch64-linux-gnu"
    manifest["target"]["name"] = "rpi4"
    (art / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="built for rpi4"):
        TVMBackend.load(art)


@pytest.mark.slow  # compiles artifacts (host_artifacts: two per module)
def test_artifact_of_another_model_is_refused(host_artifacts, tmp_path):
    other = tmp_path / "other.pt"
    other.write_bytes(b"not the same checkpoint")
    with pytest.raises(UserError, match="recompile"):
        TVMBackend.load(host_artifacts["torch"], expect_model=other)


def test_not_an_artifact(tmp_path):
    with pytest.raises(UserError, match="not an artifact"):
        TVMBackend.load(tmp_path)


@pytest.mark.slow  # four compiles of the step
@pytest.mark.parametrize("frontend", ["torch", "onnx"])
def test_bound_and_separate_weights_compute_the_same(tiny_checkpoint, frontend):
    """Through the project's pipeline (as `compile` runs it: weight transforms lifted and run
    once), weights bound as constants (what fp16 builds do) and weights passed to `main` (fp32
    builds) give PyTorch's numbers."""
    import tvm
    from tvm import relax

    from tvm_conformer.compiler.compile import run_weight_transform
    from tvm_conformer.compiler.pipeline import PipelineOptions, tvm_conformer_pipeline
    from tvm_conformer.frontend import import_step

    model, _ = load_checkpoint(tiny_checkpoint)
    inputs = _random_step_inputs(model.cfg, seed=1)
    target = tvm.target.Target({"kind": "llvm"})
    outs = []
    for bind in (False, True):
        mod, weights = import_step(model, frontend, bind=bind)
        assert (len(weights) == 0) == bind
        lifted: list = []
        pipeline = tvm_conformer_pipeline(PipelineOptions().with_default_threads(1),
                                          lift_weights=lifted.append)
        with target:
            ex = tvm.compile(mod, target=target, relax_pipeline=pipeline)
        assert bool(lifted) == (not bind)  # separate weights: their transposes were lifted
        if lifted:
            weights = run_weight_transform(lifted[0], weights)
        vm = relax.VirtualMachine(ex, tvm.cpu())
        res = vm["main"](*(tvm.runtime.tensor(a) for a in inputs), *(tvm.runtime.tensor(w) for w in weights))
        outs.append([r.numpy() for r in res])
    with torch.no_grad():
        ref = model.forward_chunk(*(torch.from_numpy(a) for a in inputs))
    for got in outs:
        for g, r in zip(got, ref, strict=True):
            np.testing.assert_allclose(g, r.numpy(), atol=1e-4, rtol=0)


@pytest.mark.slow  # compiles artifacts (host_artifacts: two per module)
def test_weight_transforms_are_lifted_out_of_the_step(tiny_checkpoint, tmp_path):
    """The pipeline runs what depends on weights alone (the linears' weight transposes) once at
    compile time: the artifact's `main` takes transformed weights and transposes nothing that
    is not an activation, and it computes what the step without lifting computes."""
    import tvm
    from tvm import relax

    from tvm_conformer.compiler.pipeline import PipelineOptions, tvm_conformer_pipeline
    from tvm_conformer.frontend import import_step

    model, _ = load_checkpoint(tiny_checkpoint)
    manifest = compile_artifact(tmp_path / "art", "host", tiny_checkpoint, quiet=True,
                                use_default_database=False)
    assert manifest["io"]["weights_transformed"]
    graphs: dict[str, tvm.IRModule] = {}
    lifted: list = []
    mod, weights = import_step(model, "torch")
    weight_vars = {v.name for v in mod["main"].params[4:]}
    with tvm.target.Target({"kind": "llvm"}):
        tvm_conformer_pipeline(PipelineOptions(), None, lambda p, m: graphs.setdefault(p, m),
                               lift_weights=lifted.append)(mod)
    [transform] = lifted
    main = graphs["graph"]["main"]
    assert len(main.params) == 4 + manifest["io"]["weights"]
    assert len(transform.params) == 1  # the tuple of the model weights

    def permuted_weights(func) -> int:  # noqa: ANN001 - permute_dims applied to a parameter
        count = 0

        def visit(expr) -> None:  # noqa: ANN001
            nonlocal count
            if (isinstance(expr, relax.Call) and getattr(expr.op, "name", "") == "relax.permute_dims"
                    and isinstance(expr.args[0], relax.Var) and expr.args[0].name in weight_vars):
                count += 1

        relax.analysis.post_order_visit(func.body, visit)
        return count

    assert permuted_weights(mod["main"]) > 0  # the imported step transposes its weights ...
    assert permuted_weights(main) == 0  # ... the compiled one does not
    backend = TVMBackend.load(tmp_path / "art")
    inputs = _random_step_inputs(model.cfg, seed=2)
    lp, _ = backend.step((tvm.runtime.tensor(inputs[1]), tvm.runtime.tensor(inputs[2])),
                         inputs[0], inputs[3])
    vm = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())
    plain = vm["main"](*(tvm.runtime.tensor(a) for a in inputs), *(tvm.runtime.tensor(w) for w in weights))
    np.testing.assert_allclose(lp, plain[0].numpy()[0], atol=1e-5, rtol=0)


@pytest.mark.slow  # compiles artifacts (host_artifacts: two per module)
def test_cached_host_build_is_rebuilt_when_the_compiler_changes(tiny_checkpoint, tmp_path, monkeypatch):
    """`transcribe --backend tvm` compiles on first use and reuses the build, unless the
    compiler's code (import, passes, pipeline, rules) changed since: then it is a new build."""
    from tvm_conformer.compiler import artifact
    from tvm_conformer.runtime import tvm_backend

    monkeypatch.setattr(tvm_backend, "cache_dir", lambda: tmp_path)
    first = tvm_backend.host_artifact(tiny_checkpoint)
    built = (first / MANIFEST).stat().st_mtime_ns
    assert tvm_backend.host_artifact(tiny_checkpoint) == first
    assert (first / MANIFEST).stat().st_mtime_ns == built  # reused, not rebuilt
    monkeypatch.setattr(artifact, "compiler_sources_hash", lambda: "a-changed-pass")
    second = tvm_backend.host_artifact(tiny_checkpoint)
    assert second != first and (second / MANIFEST).is_file()


# Counts the device allocations of TVM's CPU runtime (posix_memalign, its one allocator there)
# in a process it is preloaded into.
_ALLOC_COUNTER = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>
static long calls;
int posix_memalign(void **p, size_t align, size_t size) {
    static int (*real)(void **, size_t, size_t);
    if (!real) real = (int (*)(void **, size_t, size_t))dlsym(RTLD_NEXT, "posix_memalign");
    __atomic_add_fetch(&calls, 1, __ATOMIC_RELAXED);
    return real(p, align, size);
}
long device_allocations(void) { return calls; }
"""

_STEADY_STATE = """
import ctypes, json, sys, numpy as np, tvm
from tvm_conformer.runtime.tvm_backend import TVMBackend
count = ctypes.CDLL(None).device_allocations
b = TVMBackend.load(sys.argv[1]); c = b.config
f = np.zeros((1, c.chunk_input_frames, c.n_mels), np.float32)
m = np.ones((1, c.left_frames + c.chunk_size), np.float32)
state = b.initial_state()
for _ in range(3):
    _, state = b.step(state, f, m)
before = count()
for _ in range(20):
    _, state = b.step(state, f, m)
steady = count() - before
before = count()
for _ in range(20):  # the control: a step that uploads its chunk into a new tensor
    _, state = b.step(state, f, m)
    tvm.runtime.tensor(f, b.dev)
print(json.dumps({"steady": steady, "control": count() - before}))
"""


@pytest.mark.slow  # compiles artifacts (host_artifacts: two per module)
def test_steady_state_steps_allocate_no_device_memory(host_artifacts, tmp_path):
    src = tmp_path / "count.c"
    src.write_text(_ALLOC_COUNTER)
    shim = tmp_path / "count.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", str(shim), str(src), "-ldl"], check=True)
    env = {**os.environ, "LD_PRELOAD": str(shim)}
    out = subprocess.run([sys.executable, "-c", _STEADY_STATE, str(host_artifacts["torch"])],
                         capture_output=True, text=True, env=env, check=True)
    counts = json.loads(out.stdout.strip().splitlines()[-1])
    assert counts["control"] >= 20  # the counter sees TVM's allocations
    assert counts["steady"] == 0, counts
