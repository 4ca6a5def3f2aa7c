"""The one Relax pipeline of tvm-conformer, registered as `tvm_conformer`, read top to bottom.

Phase 1 rewrites the high-level graph (the project's graph passes asked for, then
`streamline_step` so that linears keep their epilogues, then precision, then `pack_weights`: the
matmuls' weights laid out in panels of the kernels' column tile) and, when asked, lifts what
depends on the weights alone (transposes, reshapes and packing of weights) out of `main` into a
function run once at compile time; phase 2 lowers operators to TIR (fp32 sigmoid and softmax through a
vectorizable exp) and fuses them; phase 3 schedules every kernel (a tuning database first, then
the target family's rules, which parallelize only kernels big enough to pay for the thread
pool); phase 4 lowers the graph to the VM. `dump_dir` writes the module after each.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import tvm
from tvm import relax

GRAPH_PASSES = ("layout", "einsum", "fuse")
# kernels under 1 MFLOP (~10 us on one core) stay serial: on the host, parallelizing them too
# gained nothing measurable, and made 1-thread runs slower (docs/BENCHMARKS.md, "Thread policy")
PARALLEL_MIN_FLOPS = 1_000_000


@dataclass(frozen=True)
class PipelineOptions:
    """What `compile` records in the manifest: the pipeline is a function of these alone."""

    family: str = "cpu"  # cpu | mali | hexagon
    passes: tuple[str, ...] = ()  # subset of GRAPH_PASSES, applied in GRAPH_PASSES order
    precision: str = "fp32"  # fp32 | fp16 | int8 (linears; passes/quantize_int8.py)
    numerics: bool = True  # fp16 only: MAD pre-normalized LayerNorm, conditional softmax rescale
    database: str | None = None  # MetaSchedule work dir with database_*.json
    schedules: bool = True  # the family's rules (dlight + schedules/); False = untuned kernels
    fast_exp: bool = True  # fp32 sigmoid/softmax through topi.fast_exp (passes/fast_exp.py)
    # linears on (B, T, d) without reshapes, take as a slice, q/k/v as one matmul
    # (passes/streamline_step.py): epilogues fuse into the matmuls
    streamline: bool = True
    # weights of the matmuls packed at compile time into panels of the rules' column tile,
    # contiguous down K (passes/pack_weights.py): a tile reads one contiguous panel
    pack_weights: bool = True
    # thread policy of the rules (build/schedule_rules.py): threads=1 compiles every kernel
    # serial (no thread pool at run time); otherwise kernels of fewer flops than
    # parallel_min_flops run on one thread (0: where the rule parallelized)
    threads: int = 0  # 0: the target's thread count (compile and tune fill it in)
    parallel_min_flops: int = PARALLEL_MIN_FLOPS

    def with_default_threads(self, threads: int) -> PipelineOptions:
        """These options, built for `threads` unless they already name a thread count."""
        return self if self.threads else replace(self, threads=threads)

    def serial_below(self) -> float:
        """Flops under which a kernel is compiled serial."""
        return float("inf") if self.threads == 1 else float(self.parallel_min_flops)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["passes"] = list(self.passes)
        return d


def _graph_passes(opts: PipelineOptions) -> list[tvm.transform.Pass]:
    from tvm_conformer import passes

    return [passes.by_name(name) for name in GRAPH_PASSES if name in opts.passes]


def _streamline_passes(opts: PipelineOptions) -> list[tvm.transform.Pass]:
    if not opts.streamline:
        return []
    from tvm_conformer.passes.streamline_step import StreamlineStep

    return [StreamlineStep()]


def _pack_passes(opts: PipelineOptions, target: tvm.target.Target) -> list[tvm.transform.Pass]:
    if not opts.pack_weights:
        return []
    from tvm_conformer.compiler.schedule_rules import weight_panel_lanes
    from tvm_conformer.passes.pack_weights import PackMatmulWeights

    return [PackMatmulWeights(weight_panel_lanes(opts.family, target))]


def _precision_passes(opts: PipelineOptions, target: tvm.target.Target) -> list[tvm.transform.Pass]:
    if opts.precision == "fp32":
        return []
    if opts.precision == "int8":
        from tvm_conformer.passes.quantize_int8 import QuantizeInt8, int8_scheme

        return [QuantizeInt8(int8_scheme(target))]
    from tvm_conformer.passes import fp16_passes

    return fp16_passes(numerics=opts.numerics)


def _schedule_passes(opts: PipelineOptions) -> list[tvm.transform.Pass]:
    out: list[tvm.transform.Pass] = []
    if opts.database:
        out.append(relax.transform.MetaScheduleApplyDatabase(opts.database, enable_warning=False))
    if opts.schedules:
        from tvm_conformer.compiler.schedule_rules import family_rules

        out.append(family_rules(opts.family, opts.serial_below()))
    return out


def _legalize_passes(opts: PipelineOptions) -> list[tvm.transform.Pass]:
    """`relax.backend.cpu_generic.legalize_passes`, with fp32 sigmoid and softmax legalized
    through `fast_exp` when `opts.fast_exp`."""
    custom = None
    if opts.fast_exp:
        from tvm_conformer.passes.fast_exp import fast_exp_legalizations

        custom = fast_exp_legalizations()
    return [
        relax.transform.LegalizeOps(customize_legalize_map=custom),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
    ]


def _lift_weights(sink: Callable | None) -> list[tvm.transform.Pass]:
    """`relax.transform.LiftTransformParams` on a `main` whose `num_input` attribute says which
    parameters are inputs (the rest are weights): the weight-only computations move into
    `main_transform_params`, which is taken out of the module and handed to `sink(func)`;
    `main` then takes the transformed weights. Nothing happens without a sink, attribute or
    weights (fp16 binds them as constants, and FoldConstant has folded those)."""
    if sink is None:
        return []

    @tvm.transform.module_pass(opt_level=0, name="LiftWeightTransforms")
    def _lift(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        main = mod["main"]
        n_input = main.attrs.get("num_input") if main.attrs else None
        if n_input is None or len(main.params) == int(n_input):
            return mod
        mod = relax.transform.LiftTransformParams()(mod)
        gv = mod.get_global_var("main_transform_params")
        sink(mod[gv])
        del mod[gv]
        return mod

    return [_lift]


class _Dump:
    """Writes the module to `dump_dir/NN-phase.py` (TVMScript) between phases, and hands it to
    `observe(phase, mod)` (the compiler reads the kernel list after scheduling there)."""

    def __init__(self, dump_dir: str | Path | None, observe: Callable | None = None) -> None:
        self.dir = Path(dump_dir) if dump_dir else None
        self.observe = observe
        self.count = 0

    def __call__(self, phase: str) -> tvm.transform.Pass:
        @tvm.transform.module_pass(opt_level=0, name=f"Dump[{phase}]")
        def _dump(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
            if self.observe is not None:
                self.observe(phase, mod)
            if self.dir is not None:
                self.dir.mkdir(parents=True, exist_ok=True)
                (self.dir / f"{self.count:02d}-{phase}.py").write_text(mod.script(show_meta=False))
                self.count += 1
            return mod

        return _dump


@relax.register_pipeline("tvm_conformer")
def tvm_conformer_pipeline(
    opts: PipelineOptions = PipelineOptions(),
    dump_dir: str | Path | None = None,
    observe: Callable | None = None,
    lift_weights: Callable | None = None,
) -> tvm.transform.Pass:
    """`observe(phase, mod)` sees the module between phases; `lift_weights(func)` receives the
    weight transform lifted out of `main` (see `_lift_weights`; None: nothing is lifted)."""
    dump = _Dump(dump_dir, observe)

    @tvm.transform.module_pass(opt_level=0, name="tvm_conformer")
    def _pipeline(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        target = tvm.target.Target.current()
        seq = tvm.transform.Sequential(
            [
                dump("imported"),
                # Phase 1: the high-level graph (inference-only ops, project passes, precision)
                relax.transform.DecomposeOpsForInference(),
                relax.transform.CanonicalizeBindings(),
                *_graph_passes(opts),
                *_streamline_passes(opts),
                *_precision_passes(opts, target),
                *_pack_passes(opts, target),
                relax.transform.FoldConstant(),
                *_lift_weights(lift_weights),
                dump("graph"),
                # Phase 2: operators to TIR, fused into kernels
                *_legalize_passes(opts),
                relax.transform.DeadCodeElimination(),
                dump("fused"),
                # Phase 3: a schedule for every kernel
                *_schedule_passes(opts),
                dump("scheduled"),
                # Phase 4: the graph lowered to the VM, memory planned statically
                *relax.backend.cpu_generic.pipeline.dataflow_lower_passes(target),
                *relax.backend.cpu_generic.finalize_passes(target),
                dump("lowered"),
            ]
        )
        return seq(mod)

    return _pipeline


def unscheduled_kernels(mod: tvm.IRModule) -> list[str]:
    """Names of the PrimFuncs that no schedule (database or rule) has touched."""
    names = []
    for gv, func in mod.functions.items():
        if isinstance(func, tvm.tirx.PrimFunc) and not func.attrs.get("tirx.is_scheduled", False):
            names.append(gv.name_hint)
    return sorted(names)


def kernel_names(mod: tvm.IRModule) -> list[str]:
    return sorted(gv.name_hint for gv, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc))


def kernel_calls(mod: tvm.IRModule) -> int:
    """Kernel launches per call of `main`: its calls of PrimFuncs (`call_tir`, or direct calls
    once lowered; a reshape lowered to a view is none). A dataflow graph has no loops."""
    prim = {gv for gv, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc)}
    calls = 0

    def visit(expr: relax.Expr) -> None:
        nonlocal calls
        if not isinstance(expr, relax.Call):
            return
        if isinstance(expr.op, tvm.ir.Op) and expr.op.name == "relax.call_tir":
            calls += 1
        elif isinstance(expr.op, tvm.ir.GlobalVar) and expr.op in prim:
            calls += 1

    relax.analysis.post_order_visit(mod["main"].body, visit)
    return calls
