"""schedules/cpu.py: the hand-written CPU rules schedule the kernels they claim, correctly."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import te, topi

from tvm_conformer.compiler.schedule_rules import project_rules

pytestmark = pytest.mark.slow

HOST = tvm.target.Target({"kind": "llvm"})
AARCH64 = tvm.target.Target({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a55",
                             "mattr": ["+neon"]})
RULES = {type(r).__name__: r for r in project_rules("cpu")}


def _run(func: tvm.tirx.PrimFunc, inputs: list[np.ndarray], out_shape: tuple[int, ...]) -> np.ndarray:
    lib = tvm.compile(tvm.IRModule({"main": func}), target=HOST)
    dev = tvm.cpu()
    args = [tvm.runtime.tensor(a, dev) for a in inputs]
    out = tvm.runtime.tensor(np.zeros(out_shape, "float32"), dev)
    lib(*args, out)
    return out.numpy()


def _scheduled(rule: str, func: tvm.tirx.PrimFunc, target: tvm.target.Target = HOST
               ) -> tvm.tirx.PrimFunc:
    sch = RULES[rule].apply(func, target, False)
    assert sch is not None, f"{rule} did not take the kernel"
    return sch.mod["main"]


def _check(rule: str, func: tvm.tirx.PrimFunc, inputs: list[np.ndarray], expected: np.ndarray) -> None:
    """The scheduled kernel and the unscheduled one both match the numpy reference."""
    got = _run(_scheduled(rule, func), inputs, expected.shape)
    plain = _run(func, inputs, expected.shape)
    np.testing.assert_allclose(plain, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def _rand(*shape: int) -> np.ndarray:
    return np.random.default_rng(sum(shape)).standard_normal(shape).astype("float32")


def _depthwise_conv1d(c: int = 24, t: int = 16, k: int = 5) -> tuple:
    """Causal depthwise conv1d + bias + SiLU, as the convolution module computes it."""
    x = te.placeholder((1, c, t + k - 1), name="x")
    w = te.placeholder((c, 1, k), name="w")
    b = te.placeholder((1, c, 1), name="b")
    conv = topi.nn.group_conv1d_ncw(x, w, strides=1, padding=0, dilation=1, groups=c)
    y = te.compute(conv.shape, lambda n, i, j: conv[n, i, j] + b[n, i, 0], name="bias")
    z = topi.multiply(y, topi.sigmoid(y))
    xs, ws, bs = _rand(1, c, t + k - 1), _rand(c, 1, k), _rand(1, c, 1)
    ref = np.stack([[np.convolve(xs[0, i], ws[i, 0, ::-1], "valid") for i in range(c)]]) + bs
    return te.create_prim_func([x, w, b, z]), [xs, ws, bs], ref / (1 + np.exp(-ref))


def _depthwise_conv2d_s2(c: int = 16, h: int = 9, w_: int = 13) -> tuple:
    """The subsampling's 3x3 stride-2 depthwise conv2d + bias."""
    x = te.placeholder((1, c, h, w_), name="x")
    w = te.placeholder((c, 1, 3, 3), name="w")
    conv = topi.nn.group_conv2d_nchw(x, w, stride=2, padding=0, dilation=1, groups=c)
    xs, ws = _rand(1, c, h, w_), _rand(c, 1, 3, 3)
    ho, wo = (h - 3) // 2 + 1, (w_ - 3) // 2 + 1
    ref = np.zeros((1, c, ho, wo), "float32")
    for i in range(3):
        for j in range(3):
            ref += xs[:, :, i : i + 2 * ho - 1 : 2, j : j + 2 * wo - 1 : 2] * ws[None, :, 0, i, j, None, None]
    return te.create_prim_func([x, w, conv]), [xs, ws], ref


def _dense_bias(m: int = 16, k: int = 40, n: int = 48) -> tuple:
    a = te.placeholder((m, k), name="a")
    b = te.placeholder((k, n), name="b")
    bias = te.placeholder((n,), name="bias")
    r = te.reduce_axis((0, k), name="r")
    mm = te.compute((m, n), lambda i, j: te.sum(a[i, r] * b[r, j], axis=r), name="matmul")
    out = te.compute((m, n), lambda i, j: mm[i, j] + bias[j], name="T_add")
    xs, ws, bs = _rand(m, k), _rand(k, n), _rand(n)
    return te.create_prim_func([a, b, bias, out]), [xs, ws, bs], xs @ ws + bs


def _batched_matmul(b: int = 4, m: int = 16, k: int = 20, n: int = 36) -> tuple:
    x = te.placeholder((b, m, k), name="x")
    y = te.placeholder((b, k, n), name="y")
    r = te.reduce_axis((0, k), name="r")
    mm = te.compute((b, m, n), lambda h, i, j: te.sum(x[h, i, r] * y[h, r, j], axis=r), name="matmul")
    xs, ys = _rand(b, m, k), _rand(b, k, n)
    return te.create_prim_func([x, y, mm]), [xs, ys], xs @ ys


def _pointwise_conv(c: int = 24, h: int = 4, w_: int = 5) -> tuple:
    x = te.placeholder((1, c, h, w_), name="x")
    w = te.placeholder((c, c, 1, 1), name="w")
    conv = topi.nn.conv2d_nchw(x, w, stride=1, padding=0, dilation=1)
    xs, ws = _rand(1, c, h, w_), _rand(c, c, 1, 1)
    return te.create_prim_func([x, w, conv]), [xs, ws], np.einsum("nchw,oc->nohw", xs, ws[:, :, 0, 0])


def test_depthwise_conv1d_is_scheduled_correctly() -> None:
    func, inputs, ref = _depthwise_conv1d()
    _check("DepthwiseConv", func, inputs, ref)


def test_depthwise_conv2d_stride2_is_scheduled_correctly() -> None:
    func, inputs, ref = _depthwise_conv2d_s2()
    _check("DepthwiseConv", func, inputs, ref)


def test_strided_depthwise_conv_deinterleaves_only_the_windows_rows() -> None:
    """The deinterleaved copy of the input is made per output row (the 3 input rows its window
    reads, a buffer of 3 x 2 phases x 20 on the stack), not per channel (199 rows: a workspace
    allocated in every iteration of the parallel loop)."""
    import tvm_ffi
    from tvm import s_tir, tirx

    func, _, _ = _depthwise_conv2d_bias(c=4, h=199, w_=39)
    lower = tvm.transform.Sequential([
        s_tir.transform.LowerInitBlock(), s_tir.transform.PlanAndUpdateBufferAllocationLocation(),
        s_tir.transform.ConvertBlocksToOpaque(), s_tir.transform.CompactBufferAllocation(),
        s_tir.transform.LowerOpaqueBlock(), tirx.transform.FlattenBuffer()])
    allocs: list = []
    body = lower(tvm.IRModule({"main": _scheduled("DepthwiseConv", func)}))["main"].body
    tvm_ffi.structural_walk(body, (tvm.tirx.AllocBuffer, allocs.append))
    sizes = sorted(int(np.prod([int(d) for d in a.buffer.shape])) for a in allocs)
    assert sizes and sizes[-1] == 3 * 2 * 20, sizes


@pytest.mark.parametrize("kernel", [_dense_bias, _batched_matmul, _pointwise_conv])
def test_matmul_rule_schedules_dense_batched_and_1x1_conv(kernel) -> None:  # noqa: ANN001
    func, inputs, ref = kernel()
    _check("Matmul", func, inputs, ref)


def _depthwise_conv2d_bias(c: int = 16, h: int = 33, w_: int = 39) -> tuple:
    """The subsampling's depthwise conv2d at its real width (19 outputs, a prime) + bias."""
    _, (xs, ws), ref = _depthwise_conv2d_s2(c, h, w_)
    x = te.placeholder(xs.shape, name="x")
    w = te.placeholder(ws.shape, name="w")
    y = topi.nn.group_conv2d_nchw(x, w, stride=2, padding=0, dilation=1, groups=c)
    out = te.compute(y.shape, lambda n, i, a, b: y[n, i, a, b] + w[i, 0, 1, 1], name="T_add")
    return te.create_prim_func([x, w, out]), [xs, ws], ref + ws[None, :, 0, 1, 1, None, None]


@pytest.mark.parametrize("lanes", [4, 16])
def test_depthwise_conv2d_with_epilogue_at_neon_and_avx512_widths(
    lanes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With NEON's 4 lanes the 19-wide rows are tiled by 1: the epilogue then has no loop of
    its own, and must not vectorize the tile loop around the reduction (it once did)."""
    monkeypatch.setitem(RULES["DepthwiseConv"].apply.__globals__, "vector_lanes",
                        lambda target, bits=32: lanes)
    func, inputs, ref = _depthwise_conv2d_bias()
    _check("DepthwiseConv", func, inputs, ref)


def test_schedules_parallelize_and_vectorize() -> None:
    for rule, (func, _, _) in [("DepthwiseConv", _depthwise_conv1d()), ("Matmul", _dense_bias())]:
        script = _scheduled(rule, func).script()
        assert "T.parallel" in script and "T.vectorized" in script, rule


def test_depthwise_rule_leaves_other_kernels_alone() -> None:
    for kernel in (_dense_bias, _pointwise_conv):
        assert RULES["DepthwiseConv"].apply(kernel()[0], HOST, False) is None


def test_rules_decline_softmax() -> None:
    x = te.placeholder((4, 16, 80), name="x")
    func = te.create_prim_func([x, topi.nn.softmax(x)])
    assert RULES["DepthwiseConv"].apply(func, HOST, False) is None
    assert RULES["Matmul"].apply(func, HOST, False) is None


def test_rules_use_neon_width_on_aarch64() -> None:
    """On Cortex-A55 a vector is 4 fp32 lanes: the column tile is two of them (8; compiler/
    matmul_tile.py), not the 16 of x86, and the result compiles for aarch64."""
    func, _, _ = _dense_bias()
    scheduled = _scheduled("Matmul", func, AARCH64)
    assert "T.vectorized(8)" in scheduled.script() and "T.vectorized(16)" not in scheduled.script()
    tvm.compile(tvm.IRModule({"main": scheduled}), target=AARCH64)


def _layer_norm(rows: int = 16, d: int = 256) -> tuple:
    x, g, b = te.placeholder((rows, d), name="x"), te.placeholder((d,), name="g"), te.placeholder((d,), name="b")
    xs, gs, bs = _rand(rows, d) * 3 + 1, _rand(d), _rand(1, d)[0]
    ref = (xs - xs.mean(-1, keepdims=True)) / np.sqrt(xs.var(-1, keepdims=True) + 1e-5) * gs + bs
    return te.create_prim_func([x, g, b, topi.nn.layer_norm(x, g, b, axis=[-1])]), [xs, gs, bs], ref


def _log_softmax(rows: int = 16, n: int = 5000) -> tuple:
    from tvm_conformer.passes.fast_exp import _fast_log_softmax

    x = te.placeholder((1, rows, n), name="x")
    xs = _rand(1, rows, n) * 8
    x64 = xs.astype("float64") - xs.max(-1, keepdims=True)
    ref = x64 - np.log(np.exp(x64).sum(-1, keepdims=True))
    return te.create_prim_func([x, _fast_log_softmax(x)]), [xs], ref


@pytest.mark.parametrize("kernel", [_layer_norm, _log_softmax])
def test_row_reduction_rule_sums_rows_in_vector_lanes(kernel) -> None:  # noqa: ANN001
    """LayerNorm and log-softmax: each row reduction split into vector lanes of partial sums
    (`rfactor`, a vectorized accumulator), results as the unscheduled kernel's and numpy's."""
    func, inputs, ref = kernel()
    scheduled = _scheduled("RowReduction", func)
    script = scheduled.script()
    assert "_rf" in script and ("T.vectorized(16)" in script or "T.vectorized(8)" in script)
    _check("RowReduction", func, inputs, ref.astype("float32"))


def test_row_reduction_rule_takes_odd_rows_in_vectors_of_a_divisor() -> None:
    """A row of 99 (the full-utterance attention over 99 frames) has no power-of-two factor: it
    is summed in vectors of 11 lanes, not left scalar; HVX (odd_lanes=False) keeps it scalar."""
    from tvm_conformer.compiler.vectorize import RowReduction

    func, inputs, ref = _log_softmax(rows=8, n=99)
    script = _scheduled("RowReduction", func).script()
    assert "_rf" in script and "T.vectorized(11)" in script
    _check("RowReduction", func, inputs, ref.astype("float32"))
    plain = RowReduction(odd_lanes=False).apply(func, HOST, False).mod["main"].script()
    assert "T.vectorized" not in plain


def test_row_reduction_rule_quantizes_int8_rows_exactly() -> None:
    """The int8 activations' row absolute maximum through lanes of partial maxima: the same
    bytes and scales as the unscheduled kernel (a maximum does not depend on the order)."""
    from tvm_conformer.passes.quantize_int8 import int8_quantize_func

    func = int8_quantize_func((16,), 300, 304, "uint8", 128)
    sch = RULES["RowReduction"].apply(func, HOST, False)
    assert sch is not None and "T.vectorized" in sch.mod["main"].script()
    xs = _rand(16, 300) * 4
    outs = []
    for f in (func, sch.mod["main"]):
        lib = tvm.compile(tvm.IRModule({"main": f}), target=HOST)
        args = [tvm.runtime.tensor(xs), tvm.runtime.tensor(np.zeros((16, 304), "uint8")),
                tvm.runtime.tensor(np.zeros((16, 1), "float32"))]
        lib(*args)
        outs.append([a.numpy() for a in args[1:]])
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    np.testing.assert_array_equal(outs[0][1], outs[1][1])
    np.testing.assert_allclose(outs[1][1][:, 0], np.abs(xs).max(-1) / 127, rtol=1e-6)


def test_row_reduction_rule_declines_a_reduction_across_rows() -> None:
    """A sum down the columns would gather its lanes across rows: left to the next rule."""
    x = te.placeholder((64, 48), name="x")
    k = te.reduce_axis((0, 64), name="k")
    col = te.compute((48,), lambda j: te.sum(x[k, j], axis=k), name="col_sum")
    out = te.compute((48,), lambda j: col[j] * 2.0, name="out")
    assert RULES["RowReduction"].apply(te.create_prim_func([x, out]), HOST, False) is None
