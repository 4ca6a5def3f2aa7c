"""int8 builds: the quantization pass, the tensorized int8 kernel (exact against numpy, with the
target's dot product instruction, which the check finds and misses where it is absent), and a
tiny model's int8 host build against PyTorch fp32."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.script import relax as R

from tvm_conformer.compiler.artifact import WEIGHTS, load_weights
from tvm_conformer.passes.quantize_int8 import (
    Int8Scheme,
    int8_matmul_func,
    int8_scheme,
    pack_weight,
    quantize_int8,
)
from tvm_conformer.verify.checks import check_int8

AVX2 = {"kind": "llvm", "mcpu": "znver3"}  # AVX2, no AVX-512 (Zen 3)
VNNI = {"kind": "llvm", "mcpu": "cascadelake"}  # AVX-512 VNNI (vpdpbusd)
GENERIC = {"kind": "llvm", "mcpu": "x86-64"}  # no AVX2: the vector intrinsic of Arm without sdot
A53 = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a53", "mattr": ["+neon"]}
A55 = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a55", "mattr": ["+neon"]}


@pytest.mark.parametrize(("target", "isa", "weight_max"), [
    (AVX2, "avx2", 63),
    (VNNI, "vnni", 127),
    (A55, "sdot", 127),
    (A53, "neon", 127),
    ({"kind": "llvm", "mtriple": "armv7a-linux-gnueabihf", "mcpu": "cortex-a7", "mattr": ["+neon"]}, "neon", 127),
    ({"kind": "llvm", "mtriple": "hexagon", "mcpu": "hexagonv68", "mattr": ["+hvxv68", "+hvx-length128b"]}, "hvx", 127),
])
def test_scheme_follows_the_targets_int8_dot_product(target: dict, isa: str, weight_max: int) -> None:
    scheme = int8_scheme(tvm.target.Target(target))
    assert (scheme.isa, scheme.weight_max) == (isa, weight_max)
    # u8 x s8 instructions (x86, HVX) get activations shifted into u8; Arm multiplies s8 x s8
    assert scheme.act_offset == (128 if isa in ("avx2", "vnni", "hvx") else 0)


def _linear_and_attention() -> tvm.IRModule:
    @tvm.script.ir_module
    class Mod:
        @R.function
        def main(x: R.Tensor((1, 4, 16), "float32"), w: R.Tensor((24, 16), "float32")) -> R.Tensor((1, 4, 4), "float32"):
            R.func_attr({"num_input": 1})
            with R.dataflow():
                wt = R.permute_dims(w)
                y = R.matmul(x, wt, out_dtype="float32")  # a linear: quantized
                q = R.strided_slice(y, axes=[2], begin=[0], end=[16])
                s = R.matmul(q, R.permute_dims(q, [0, 2, 1]), out_dtype="float32")  # activations only
                out = R.strided_slice(s, axes=[2], begin=[0], end=[4])
                R.output(out)
            return out

    return Mod


def test_pass_quantizes_linears_and_leaves_activation_products() -> None:
    mod, count = quantize_int8(_linear_and_attention(), int8_scheme(tvm.target.Target(AVX2)))
    assert count == 1
    text = mod.script(show_meta=False)
    assert text.count("R.matmul(") == 1  # the activation x activation matmul stays fp32
    assert "int8_matmul" in text and "int8_quantize" in text


def test_pack_weight_round_trips_within_half_a_step() -> None:
    w = np.random.default_rng(0).standard_normal((12, 10)).astype(np.float32)
    scheme = Int8Scheme("avx2", 8, "uint8", 128, 63)
    sw, packed = pack_weight(w, scheme)
    wq = packed.transpose(1, 3, 0, 2).reshape(12, 16)[:, :10].astype(np.float32)  # unpacked
    assert np.abs(wq).max() <= 63
    np.testing.assert_allclose(wq * sw, w, atol=float(sw.max()) / 2 + 1e-6)


def test_weight_quantization_is_lifted_out_of_the_step() -> None:
    mod, _ = quantize_int8(_linear_and_attention(), int8_scheme(tvm.target.Target(AVX2)))
    lifted = relax.transform.LiftTransformParams()(mod)
    prep = lifted["main_transform_params"].script(show_meta=False)
    assert "R.round(" in prep and '"int8"' in prep  # weights quantized once, at compile time
    main = lifted["main"].script(show_meta=False)
    assert "R.max(" not in main and "R.round(" not in main  # no weight work left per step


def _int8_kernel_lib(tmp_path: Path, target: dict, schedule: bool, rows: int = 16, k: int = 64,
                     n: int = 48):
    """(library path, scheme) of one int8_matmul kernel for `target`, scheduled by the int8 rule
    or left as the plain loop nest."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "schedules"))
    from int8 import Int8Matmul  # schedules/ is loaded by file, not a package

    tgt = tvm.target.Target(target)
    scheme = int8_scheme(tgt)
    func = int8_matmul_func((rows,), k, n, scheme.lanes, scheme.act_dtype)
    func = func.with_attr("global_symbol", "fused_int8_matmul_test")
    if schedule:
        func = Int8Matmul().apply(func, tgt, False).mod["main"]
    lib = tvm.compile(tvm.IRModule({"fused_int8_matmul_test": func}), target=tgt)
    path = tmp_path / f"int8-{schedule}.so"
    if "mtriple" in target:
        lib.export_library(str(path), fcompile=tvm.support.cc.cross_compiler("aarch64-linux-gnu-g++"))
    else:
        lib.export_library(str(path))
    return path, scheme


def _cpu_has(*flags: str) -> bool:
    from tvm_conformer.compiler.compat import cpu_flags

    return set(flags) <= (cpu_flags() or set())


@pytest.mark.slow
@pytest.mark.parametrize(("target", "flags"), [(AVX2, ("avx2",)), (VNNI, ("avx512_vnni", "avx512bw")),
                                               (GENERIC, ())], ids=["avx2", "vnni", "generic"])
def test_tensorized_kernel_is_exact_and_uses_the_dot_product(tmp_path: Path, target: dict,
                                                              flags: tuple[str, ...]) -> None:
    rows, k, n = 16, 64, 48
    path, scheme = _int8_kernel_lib(tmp_path, target, schedule=True, rows=rows, k=k, n=n)
    if scheme.isa != "generic":  # (generic: no instruction to look for)
        assert check_int8(path, scheme.isa, []).ok  # the dot product instruction is in the kernel
    if not _cpu_has(*flags):
        pytest.skip(f"compiled and checked; this CPU lacks {', '.join(flags)} to run it")
    rng = np.random.default_rng(0)
    x = (rng.integers(0, 256, (rows, k)).astype(np.uint8) if scheme.act_dtype == "uint8"
         else rng.integers(-127, 128, (rows, k)).astype(np.int8))
    w = rng.integers(-scheme.weight_max, scheme.weight_max + 1, (k, n)).astype(np.float32)
    # the packed layout (N/L, K/4, L, 4) of pack_weight, of integer weights as they are
    packed = w.astype(np.int8).reshape(k // 4, 4, n // scheme.lanes, scheme.lanes).transpose(2, 0, 3, 1)
    out = tvm.runtime.tensor(np.zeros((rows, n), np.int32))
    tvm.runtime.load_module(str(path))["fused_int8_matmul_test"](
        tvm.runtime.tensor(x), tvm.runtime.tensor(np.ascontiguousarray(packed)), out)
    np.testing.assert_array_equal(out.numpy(), x.astype(np.int64) @ w.astype(np.int64))


def test_whole_epilogue_chain_runs_in_the_tile_and_is_exact(tmp_path: Path) -> None:
    """The dequantizing epilogue (zero-point, cast, row and column scales, bias, swish) is a
    chain of blocks of which only the first reads the matmul: all of it goes into the parallel
    tile loop, none left as a serial loop over the output after it, and the result is exact."""
    from tvm import te

    sys.path.insert(0, str(Path(__file__).parents[1] / "schedules"))
    from int8 import Int8Matmul

    tgt = tvm.target.Target(AVX2)
    scheme = int8_scheme(tgt)
    rows, k, n = 16, 64, 48
    lanes = scheme.lanes
    x = te.placeholder((rows, k), scheme.act_dtype, name="xq")
    w = te.placeholder((n // lanes, k // 4, lanes, 4), "int8", name="wq")  # pack_weight's layout
    zero = te.placeholder((n,), "int32", name="zero")
    sx = te.placeholder((rows, 1), "float32", name="sx")
    sw = te.placeholder((n,), "float32", name="sw")
    bias = te.placeholder((n,), "float32", name="bias")
    r = te.reduce_axis((0, k), name="k")
    c = te.compute((rows, n), lambda i, j: te.sum(
        x[i, r].astype("int32") * w[j // lanes, r // 4, j % lanes, r % 4].astype("int32"), axis=r),
        name="int8_matmul")
    d = te.compute((rows, n), lambda i, j: c[i, j] - zero[j], name="sub")
    f = te.compute((rows, n), lambda i, j: d[i, j].astype("float32"), name="cast")
    g = te.compute((rows, n), lambda i, j: f[i, j] * sx[i, 0], name="row_scale")
    h = te.compute((rows, n), lambda i, j: g[i, j] * sw[j] + bias[j], name="col_scale_bias")
    s = te.compute((rows, n), lambda i, j: 1.0 / (1.0 + te.exp(-h[i, j])), name="sigmoid")
    y = te.compute((rows, n), lambda i, j: h[i, j] * s[i, j], name="swish")
    func = te.create_prim_func([x, w, zero, sx, sw, bias, y]).with_attr("global_symbol", "k")
    scheduled = Int8Matmul().apply(func, tgt, False).mod["main"]
    body = scheduled.body.block.body  # the root block's loops
    assert isinstance(body, tvm.tirx.For) and body.kind == tvm.tirx.ForKind.PARALLEL  # one nest
    if not _cpu_has("avx2"):
        pytest.skip("scheduled; this CPU lacks AVX2 to run it")
    lib = tvm.compile(tvm.IRModule({"k": scheduled}), target=tgt)
    rng = np.random.default_rng(1)
    args = [rng.integers(0, 256, (rows, k)).astype(np.uint8),
            rng.integers(-scheme.weight_max, scheme.weight_max + 1, (k, n)).astype(np.int8),
            rng.integers(-50, 50, n).astype(np.int32), rng.uniform(0.01, 0.02, (rows, 1)).astype(np.float32),
            rng.uniform(0.001, 0.002, n).astype(np.float32), rng.normal(0, 1, n).astype(np.float32)]
    packed = args[1].reshape(k // 4, 4, n // lanes, lanes).transpose(2, 0, 3, 1)
    out = tvm.runtime.tensor(np.zeros((rows, n), np.float32))
    lib["k"](*[tvm.runtime.tensor(np.ascontiguousarray(a)) for a in (args[0], packed, *args[2:])], out)
    pre = ((args[0].astype(np.int64) @ args[1].astype(np.int64)) - args[2]) * args[3] * args[4] + args[5]
    np.testing.assert_allclose(out.numpy(), pre / (1 + np.exp(-pre)), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("target", [AVX2, VNNI, A55, A53], ids=["avx2", "vnni", "sdot", "neon"])
def test_int8_check_fails_without_the_dot_product(tmp_path: Path, target: dict) -> None:
    flags = ["--mattr=+dotprod"] if target is A55 else []
    good, scheme = _int8_kernel_lib(tmp_path, target, schedule=True)
    bad, _ = _int8_kernel_lib(tmp_path, target, schedule=False)
    assert check_int8(good, scheme.isa, flags).ok
    result = check_int8(bad, scheme.isa, flags)
    assert result.ok is False and "without: fused_int8_matmul_test" in result.detail


@pytest.fixture(scope="module")
def int8_build(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tvm_conformer.compiler.compile import compile_artifact
    from tvm_conformer.compiler.pipeline import PipelineOptions

    art = tmp_path_factory.mktemp("int8") / "host-int8"
    compile_artifact(art, "host", tiny_checkpoint, opts=PipelineOptions(precision="int8"),
                     quiet=True, use_default_database=False)
    return art


@pytest.mark.slow
def test_int8_build_matches_pytorch_fp32_within_quantization_error(int8_build: Path, tiny_checkpoint: Path) -> None:
    from test_fp16_build import _chunks, _stream

    from tvm_conformer.model import load_checkpoint
    from tvm_conformer.runtime.backend import TorchBackend
    from tvm_conformer.runtime.tvm_backend import TVMBackend
    from tvm_conformer.verify.checks import check_artifact

    model = load_checkpoint(tiny_checkpoint)[0]
    chunks = _chunks(model, shift=0.0)
    got = _stream(TVMBackend.load(int8_build), chunks)
    ref = _stream(TorchBackend(model), chunks)
    for lp, lp_ref in zip(got[0::3], ref[0::3], strict=True):
        err = np.abs(lp - lp_ref).max()
        assert 1e-4 < err < 0.1  # quantized (not fp32 in disguise), and close: measured ~0.027
        assert np.array_equal(lp.argmax(-1), lp_ref.argmax(-1))
    weights = load_weights(int8_build / WEIGHTS)
    assert any(w.dtype == np.int8 for w in weights)  # the file holds the quantized weights
    from tvm_conformer.targets import load_target

    isa = int8_scheme(load_target("host").tvm()).isa  # this CPU's: vnni, avx2, ...
    checks = {c.name: c for c in check_artifact(int8_build)}
    assert checks[f"int8-{isa}"].ok and checks["loads"].ok


@pytest.mark.slow
def test_ort_int8_peer_is_quantize_dynamic_of_the_step(tiny_checkpoint: Path, tmp_path: Path) -> None:
    import onnx
    import onnxruntime as ort

    from tvm_conformer.bench.ort_int8 import quantize_step_onnx
    from tvm_conformer.frontend import export_onnx
    from tvm_conformer.model import load_checkpoint

    model = load_checkpoint(tiny_checkpoint)[0]
    src = export_onnx(model, tmp_path / "step.onnx")
    dst = quantize_step_onnx(src, tmp_path / "step.int8.onnx")
    ops = {n.op_type for n in onnx.load(str(dst)).graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops
    assert dst.stat().st_size < src.stat().st_size
    feeds = {i.name: np.zeros([d.dim_value for d in i.type.tensor_type.shape.dim], np.float32)
             for i in onnx.load(str(src)).graph.input}
    feeds["att_mask"][:] = 1.0
    fp32 = ort.InferenceSession(str(src))
    int8 = ort.InferenceSession(str(dst))
    err = np.abs(int8.run(None, feeds)[0] - fp32.run(None, feeds)[0]).max()
    # per-tensor activation scales: measured 0.49 here, where --precision int8 (per row) is ~0.03
    assert 1e-4 < err < 1.0
