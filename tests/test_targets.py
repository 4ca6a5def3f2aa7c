"""Device files, the vectorizing rule, cross-compiled artifacts and their device-free checks,
and the roofline estimate."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tvm
from tvm import te, topi
from tvm.script import ir as I
from tvm.script import relax as R

from tvm_conformer.compiler.link import OPENCL_SOURCE, apt_package
from tvm_conformer.compiler.pipeline import PipelineOptions, tvm_conformer_pipeline
from tvm_conformer.compiler.roofline import Work, count_work, estimate, kernel_macs
from tvm_conformer.compiler.vectorize import VectorizeInnermost
from tvm_conformer.model import ModelConfig, load_checkpoint
from tvm_conformer.targets import list_targets, load_target
from tvm_conformer.verify.checks import (
    HVX,
    NEON_A32,
    NEON_A64,
    check_artifact,
    check_elf,
    check_opencl,
    vector_counts,
)

HOST = tvm.target.Target({"kind": "llvm"})
CROSS = ("rpi4", "armv7-a7", "hexagon-v68", "mali-g78")


# --- device files -------------------------------------------------------------------------

def test_every_device_file_loads_and_gives_a_tvm_target() -> None:
    targets = {t.name: t for t in list_targets()}
    assert {"host", "rpi4", "phone-a76", "wearable-a55", "wearable-a53", "armv7-a7",
            "hexagon-v68", "hexagon-v73", "mali-g78", "mali-g610"} <= set(targets)
    for t in targets.values():
        kind = t.tvm().kind.name
        assert kind == t.tvm_target["kind"]
        assert t.peak_gflops() > 0 and t.mem_bandwidth_gbs > 0 and t.elf_machine
    assert targets["mali-g78"].tvm().host.kind.name == "llvm"


def test_peak_is_cores_clock_lanes_fma_and_fp16_rate() -> None:
    a76 = load_target("phone-a76")  # 4 cores x 2.6 GHz x 4 lanes x 2 (FMA) x 2 pipes
    assert a76.peak_gflops() == pytest.approx(4 * 2.6 * 4 * 2 * 2)
    assert a76.peak_gflops("fp16") == pytest.approx(2 * a76.peak_gflops())


def test_apt_package_follows_debian_cross_compiler_names() -> None:
    assert apt_package("aarch64-linux-gnu-g++") == "g++-aarch64-linux-gnu"
    assert apt_package("arm-linux-gnueabihf-g++") == "g++-arm-linux-gnueabihf"
    assert apt_package("ld.lld") == "lld"


# --- the vectorizing rule ---------------------------------------------------------------------

def _rand(*shape: int) -> np.ndarray:
    return np.random.default_rng(sum(shape)).standard_normal(shape).astype("float32")


def _run(func: tvm.tirx.PrimFunc, inputs: list[np.ndarray], out_shape: tuple[int, ...]) -> np.ndarray:
    lib = tvm.compile(tvm.IRModule({"main": func}), target=HOST)
    args = [tvm.runtime.tensor(a) for a in inputs]
    out = tvm.runtime.tensor(np.zeros(out_shape, "float32"))
    lib(*args, out)
    return out.numpy()


def _elementwise() -> tuple:
    x, b = te.placeholder((16, 144), name="x"), te.placeholder((144,), name="b")
    y = te.compute(x.shape, lambda i, j: (x[i, j] + b[j]) * te.sigmoid(x[i, j] + b[j]), name="y")
    xs, bs = _rand(16, 144), _rand(144)
    return te.create_prim_func([x, b, y]), [xs, bs], (xs + bs) / (1 + np.exp(-(xs + bs)))


def _dense_bias() -> tuple:
    a, w, bias = te.placeholder((16, 40), name="a"), te.placeholder((40, 48), name="w"), \
        te.placeholder((48,), name="bias")
    r = te.reduce_axis((0, 40), name="r")
    mm = te.compute((16, 48), lambda i, j: te.sum(a[i, r] * w[r, j], axis=r), name="matmul")
    out = te.compute((16, 48), lambda i, j: mm[i, j] + bias[j], name="T_add")
    xs, ws, bs = _rand(16, 40), _rand(40, 48), _rand(48)
    return te.create_prim_func([a, w, bias, out]), [xs, ws, bs], xs @ ws + bs


def _depthwise_conv1d(c: int = 24, t: int = 16, k: int = 5) -> tuple:
    x, w = te.placeholder((1, c, t + k - 1), name="x"), te.placeholder((c, 1, k), name="w")
    conv = topi.nn.group_conv1d_ncw(x, w, strides=1, padding=0, dilation=1, groups=c)
    xs, ws = _rand(1, c, t + k - 1), _rand(c, 1, k)
    ref = np.stack([[np.convolve(xs[0, i], ws[i, 0, ::-1], "valid") for i in range(c)]])
    return te.create_prim_func([x, w, conv]), [xs, ws], ref


def _transpose() -> tuple:
    x = te.placeholder((16, 4, 36), name="x")
    xs = _rand(16, 4, 36)
    return te.create_prim_func([x, topi.transpose(x, (1, 0, 2))]), [xs], xs.transpose(1, 0, 2)


@pytest.mark.parametrize("vector_bits", [128, 1024])  # NEON, HVX
@pytest.mark.parametrize("kernel", [_elementwise, _dense_bias, _depthwise_conv1d, _transpose])
def test_vectorize_innermost_matches_numpy(kernel, vector_bits: int) -> None:  # noqa: ANN001
    func, inputs, ref = kernel()
    sch = VectorizeInnermost(vector_bits).apply(func, HOST, False)
    assert sch is not None and "T.vectorized" in sch.mod.script()
    np.testing.assert_allclose(_run(sch.mod["main"], inputs, ref.shape), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_run(func, inputs, ref.shape), ref, rtol=1e-5, atol=1e-5)


def test_vectorize_innermost_takes_hvx_lanes_and_moves_the_reduction_out() -> None:
    sch = VectorizeInnermost(1024).apply(_dense_bias()[0], HOST, False)
    script = sch.mod.script()
    assert "T.vectorized(16)" in script  # 48 columns: 16 lanes divide them, 32 do not
    # the update's vector loop is inside the reduction loop: a broadcast multiply-add per step
    k = script.index("in range(40)")
    assert k < script.index("T.vectorized(16)", k) < script.index('T.sblock("matmul_update")')


def test_vectorize_innermost_leaves_gathers_to_llvm() -> None:
    """A transpose that moves the innermost axis reads one element per lane (3x slower than
    the plain loop on the host): left alone; one that keeps it is vectorized."""
    x = te.placeholder((16, 144, 19), name="x")
    rule = VectorizeInnermost(512)
    assert rule.apply(te.create_prim_func([x, topi.transpose(x, (0, 2, 1))]), HOST, False) is None
    moved = topi.reshape(topi.transpose(x, (1, 0, 2)), (144, 16 * 19))
    assert rule.apply(te.create_prim_func([x, moved]), HOST, False) is None  # floordiv rows
    kept = te.create_prim_func([x, topi.transpose(x, (1, 0, 2))])
    assert "T.vectorized" in rule.apply(kept, HOST, False).mod.script()


def test_vectorize_innermost_leaves_row_reductions_to_other_rules() -> None:
    x = te.placeholder((4, 16, 80), name="x")
    assert VectorizeInnermost(1024).apply(te.create_prim_func([x, topi.nn.softmax(x)]), HOST,
                                          False) is None


@pytest.fixture(scope="module")
def tiny_fused(tiny_checkpoint: Path) -> tvm.IRModule:
    """The tiny model's kernels after fusion, before scheduling (copied: later phases update
    the module in place)."""
    from tvm_conformer.frontend import import_step

    return _fused(import_step(load_checkpoint(tiny_checkpoint)[0])[0])


@pytest.mark.slow
@pytest.mark.parametrize("vector_bits", [128, 1024])
def test_vectorize_innermost_keeps_every_model_kernel_exact(tiny_fused: tvm.IRModule,
                                                           vector_bits: int) -> None:
    """Each kernel of the tiny model the rule takes computes what the unscheduled one does."""
    rule = VectorizeInnermost(vector_bits)
    kernels = {gv.name_hint: f for gv, f in tiny_fused.functions.items()
               if isinstance(f, tvm.tirx.PrimFunc)}
    taken = {n: s.mod["main"] for n, f in kernels.items()
             if (s := rule.apply(f, HOST, False)) is not None}
    # left to other rules or to LLVM: row reductions (softmax, LayerNorm) and gathers (transposes)
    assert len(taken) >= len(kernels) // 2, sorted(set(kernels) - set(taken))

    def build(funcs: dict) -> tvm.runtime.Module:
        return tvm.compile(tvm.IRModule({n: f.with_attr("global_symbol", n) for n, f in funcs.items()}),
                           target=HOST)

    plain, vectorized = build({n: kernels[n] for n in taken}), build(taken)
    rng = np.random.default_rng(0)
    for name, func in taken.items():
        # integer inputs (indices) stay 0, in range; the last parameter is the output
        args = [rng.standard_normal([int(d) for d in p.shape]).astype(str(p.dtype))
                if "float" in str(p.dtype) else np.zeros([int(d) for d in p.shape], str(p.dtype))
                for p in func.params]
        a, b = [tvm.runtime.tensor(x) for x in args], [tvm.runtime.tensor(x) for x in args]
        plain[name](*a)
        vectorized[name](*b)
        assert not np.array_equal(a[-1].numpy(), args[-1]), f"{name} wrote nothing"
        np.testing.assert_allclose(b[-1].numpy(), a[-1].numpy(), rtol=1e-5, atol=1e-6, err_msg=name)


# --- disassembly parsing ----------------------------------------------------------------------

A64 = """\
0000000000001610 <__tvm_ffi_fused_matmul_add>:
    1614: 00 00 00 00  \tadd\tx0, x1, x2
0000000000001700 <fused_matmul_add_compute_>:
    1704: 00 00 00 00  \tfmla\tv0.4s, v1.4s, v2.s[0]
    1708: 00 00 00 00  \tldr\tq1, [x3]
0000000000001800 <$x>:
    180c: 00 00 00 00  \tfmadd\ts0, s1, s2, s0
0000000000001900 <__tvm_ffi_reshape>:
    1904: 00 00 00 00  \tldr\tw0, [x1]
"""
A32 = """\
00001000 <__tvm_ffi_fused_conv1d>:
    1004: 05 5a 26 ee  \tvmul.f32\ts10, s12, s10
    1008: 00 00 00 00  \tvmla.f32\tq8, q9, q10
    100c: 00 00 00 00  \tvld1.32\t{d16, d17}, [r6]!
    1010: 00 00 00 00  \tvadd.f32\td16, d17, d18
"""
HEX = """\
00001000 <__tvm_ffi_fused_matmul>:
    1004:\t00 00 00 00\t1c01e200 { \tv0.qf32 = vmpy(v1.sf,v2.sf)
    1008:\t00 00 00 00\t2c00c003   \tv3 = vmem(r0+#0) }
    100c:\t00 00 00 00\tb001c021 { \tr1 = add(r1,#4) }
"""


def test_vector_counts_group_wrapper_and_body_of_each_kernel() -> None:
    # fmla v0.4s is NEON; `ldr q1` is not: scalar code moves 16 bytes through q registers too
    assert vector_counts(A64, NEON_A64) == {"fused_matmul_add": (1, 4), "reshape": (0, 1)}


def test_a_lone_q_register_is_not_neon_on_aarch64() -> None:
    scalar = ("0000000000001000 <__tvm_ffi_copy>:\n"
              "    1004: 00 00 00 00  \tldr\tq0, [x1]\n"
              "    1008: 00 00 00 00  \tstr\tq0, [x2]\n"
              "    100c: 00 00 00 00  \tldp\tq1, q2, [x1, #16]\n"
              "    1010: 00 00 00 00  \tfmadd\ts0, s1, s2, s0\n")
    assert vector_counts(scalar, NEON_A64) == {"copy": (0, 4)}
    assert vector_counts(scalar.replace("ldr\tq0, [x1]", "ld1\t{ v0.4s }, [x1]"), NEON_A64) == {"copy": (1, 4)}


def test_vector_counts_tell_neon_from_scalar_vfp_on_armv7() -> None:
    assert vector_counts(A32, NEON_A32) == {"fused_conv1d": (3, 4)}


def test_vector_counts_find_hvx() -> None:
    assert vector_counts(HEX, HVX) == {"fused_matmul": (2, 3)}


# --- the SIMD checks on real libraries: vector code passes, scalar code fails -------------------

def _library(target: str, mattr: list[str] | None, out: Path) -> Path:
    """The project's vectorized dense+bias kernel, compiled and linked for `target` with its
    `mattr` replaced (None: the target's own)."""
    import dataclasses

    from tvm_conformer.compiler.link import export

    device = load_target(target)
    if mattr is not None:
        device = dataclasses.replace(device, tvm_target=dict(device.tvm_target, mattr=mattr))
    tvm_target = device.tvm()
    sch = VectorizeInnermost(device.simd_bits).apply(_dense_bias()[0], tvm_target, False)
    assert sch is not None and "T.vectorized" in sch.mod.script()
    func = sch.mod["main"].with_attr("global_symbol", "fused_matmul_add")
    export(tvm.compile(tvm.IRModule({"fused_matmul_add": func}), target=tvm_target), device, out)
    return out


@pytest.mark.slow  # two cross compiles
@pytest.mark.parametrize("target, isa, scalar_mattr", [("rpi4", "NEON", ["-neon"]),
                                                       ("hexagon-v68", "HVX", [])])
def test_simd_check_fails_on_a_scalar_library_and_passes_on_a_vector_one(
        tmp_path: Path, target: str, isa: str, scalar_mattr: list[str]) -> None:
    from tvm_conformer.verify.checks import _A64_DISASM, _HVX_DISASM, check_simd

    pattern, flags = (NEON_A64, _A64_DISASM) if isa == "NEON" else (HVX, _HVX_DISASM)
    macs = {"fused_matmul_add": 16 * 40 * 48}
    vector = check_simd(_library(target, None, tmp_path / "vector.so"), isa, pattern, flags, macs)
    scalar = check_simd(_library(target, scalar_mattr, tmp_path / "scalar.so"), isa, pattern,
                        flags, macs)
    assert vector.ok is True, vector.detail
    assert scalar.ok is False and "scalar: fused_matmul_add (100.0%)" in scalar.detail, scalar.detail


# --- cross-compiled artifacts and their checks --------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("target", [*CROSS, "host"])
def test_cross_compiled_artifact_passes_every_check(artifacts, target: str, precision: str) -> None:  # noqa: ANN001
    results = {r.name: r for r in check_artifact(artifacts(target, precision))}
    skipped = {"neon"} if (target, precision) == ("armv7-a7", "fp16") else set()
    assert {n for n, r in results.items() if r.ok is None} == skipped, results
    assert all(r.ok for n, r in results.items() if n not in skipped), results
    family = load_target(target).family
    expected = {"cpu": {"neon"} if target != "host" else set(), "hexagon": {"hvx"},
                "mali": {"opencl", "opencl_run"}}[family]
    assert set(results) == {"elf", "loads"} | expected
    if target == "host":
        assert "ran one step" in results["loads"].detail


@pytest.mark.slow
def test_checks_fail_on_the_wrong_machine_and_on_broken_opencl(artifacts, tmp_path: Path) -> None:  # noqa: ANN001
    arm64 = artifacts("rpi4", "fp32") / "lib.so"
    assert check_elf(arm64, "ARM").ok is False  # AArch64, 64-bit
    assert check_elf(arm64, "AArch64").ok is True
    source = (artifacts("mali-g78", "fp32") / OPENCL_SOURCE).read_text()
    broken = tmp_path / OPENCL_SOURCE
    broken.write_text(source.replace("__kernel", "__kernel undefined_type x;", 1))
    assert check_opencl(broken).ok is False


@pytest.mark.slow
def test_mali_schedules_every_kernel_and_embeds_the_opencl_it_checks(artifacts) -> None:  # noqa: ANN001
    from tvm_conformer.compiler.artifact import read_manifest

    art = artifacts("mali-g78", "fp32")
    assert read_manifest(art)["kernels"]["unscheduled"] == []
    source = (art / OPENCL_SOURCE).read_text()
    assert "__kernel" in source and source in (art / "lib.so").read_bytes().decode("latin-1")


# --- the roofline estimate ------------------------------------------------------------------

@I.ir_module
class SmallGraph:
    @R.function
    def main(x: R.Tensor((16, 32), "float32"), s: R.Tensor((1, 8, 20), "float32"),
             w: R.Tensor((32, 48), "float32"), k: R.Tensor((8, 1, 5), "float32")):
        R.func_attr({"num_input": 2})
        with R.dataflow():
            y = R.nn.relu(R.matmul(x, w))
            z = R.nn.conv1d(s, k, groups=8)
            R.output(y, z)
        return y, z


def _fused(mod: tvm.IRModule, opts: PipelineOptions | None = None) -> tvm.IRModule:
    """The kernels after fusion, before scheduling (copied: later phases update the module in
    place)."""
    phases: dict[str, tvm.IRModule] = {}

    def observe(phase: str, m: tvm.IRModule) -> None:
        phases.setdefault(phase, tvm.IRModule(dict(m.functions)))

    with HOST:  # weight-only work lifted out of the step, as `compile` does
        tvm_conformer_pipeline(replace(opts or PipelineOptions(), schedules=False), None, observe,
                               lift_weights=lambda _f: None)(mod)
    return phases["fused"]


def test_count_work_of_a_small_graph_matches_a_hand_count() -> None:
    work = count_work(_fused(SmallGraph))
    # matmul 16x32 @ 32x48; depthwise conv1d: 8 channels x 16 outputs x 5 taps
    assert work.macs == 16 * 32 * 48 + 8 * 16 * 5
    assert work.weight_bytes == 4 * (32 * 48 + 8 * 5)  # each weight once
    # inputs read and outputs written: x and y (matmul+relu fused), s and z
    assert work.activation_bytes == 4 * (16 * 32 + 16 * 48 + 8 * 20 + 8 * 16)


@pytest.mark.slow
def test_count_work_of_the_model_agrees_with_the_relax_graph_count(tiny_fused: tvm.IRModule,
                                                                    tiny_checkpoint: Path) -> None:
    """Counted in the fused TIR kernels vs. from relax matmul/conv shapes (bench.macs): equal
    with row-major weights; with packed weights the kernels also multiply the zero columns that
    pad the CTC output's weight panels (vocab -> a multiple of the panel width), and no more."""
    from tvm_conformer.bench.macs import step_macs
    from tvm_conformer.compiler.schedule_rules import weight_panel_lanes
    from tvm_conformer.frontend import import_step

    model = load_checkpoint(tiny_checkpoint)[0]
    cfg = model.cfg
    model_macs = step_macs(cfg)["total"]
    row_major = _fused(import_step(model)[0], PipelineOptions(pack_weights=False))
    assert count_work(row_major).macs == model_macs
    lanes = weight_panel_lanes("cpu", HOST)
    padded = -(-cfg.vocab_size // lanes) * lanes
    assert padded > cfg.vocab_size  # the tiny vocabulary is no multiple of the panel width
    pad_macs = cfg.chunk_size * cfg.d_model * (padded - cfg.vocab_size)
    assert count_work(tiny_fused).macs == model_macs + pad_macs


def test_kernel_macs_ignores_reductions_that_do_not_multiply() -> None:
    x = te.placeholder((4, 80), name="x")
    r = te.reduce_axis((0, 80), name="r")
    total = te.compute((4,), lambda i: te.sum(x[i, r], axis=r), name="sum")
    assert kernel_macs(te.create_prim_func([x, total])) == 0


def test_estimate_is_the_slower_of_compute_and_memory_over_audio() -> None:
    rpi4 = load_target("rpi4")  # 96 GFLOP/s, 12.8 GB/s
    work = Work(macs=48_000_000, weight_bytes=12_800_000, activation_bytes=0, kernel_calls=1,
                kernel_macs={})
    e = estimate(rpi4, work, audio_seconds=0.64, precision="fp32")
    assert e.compute_seconds == pytest.approx(2 * 48e6 / 96e9)  # 1 ms
    assert e.memory_seconds == pytest.approx(1e-3)
    assert e.rtf_lower_bound == pytest.approx(1e-3 / 0.64)
    half = estimate(load_target("phone-a76"), work, 0.64, "fp16")
    assert half.peak_gflops == pytest.approx(2 * load_target("phone-a76").peak_gflops())
    assert "not a measurement" in e.label


def test_chunk_of_the_default_model_is_0_64_seconds() -> None:
    from tvm_conformer.compiler.roofline import chunk_seconds

    assert chunk_seconds(ModelConfig()) == pytest.approx(0.64)
