"""Schedule rules per target family: the project's own from `schedules/`, then dlight's, all
under one thread policy.

A file `schedules/<family>.py` may define `RULES`, a list of dlight `ScheduleRule`s tried
before dlight's defaults, so hand-written rules for the hot kernels win where they apply.

Thread policy (CPU targets): a kernel that computes fewer than `parallel_min_flops` runs on one
thread, whatever the rule chose. Waking TVM's thread pool and joining it costs 5-10 us per
kernel on the host, more than the whole of most of the step's kernels (a LayerNorm of 16 x 144
takes ~3 us on one thread); the threshold is measured (docs/BENCHMARKS.md, "Thread policy").
"""

from __future__ import annotations

import importlib.util

import tvm
from tvm import s_tir, tirx
from tvm.s_tir import dlight as dl
from tvm.target import Target

from tvm_conformer.compiler.matmul_tile import column_tile, fp32_lanes
from tvm_conformer.paths import SCHEDULES_DIR


def weight_panel_lanes(family: str, target: Target) -> int:
    """Columns of the weight panels `PackMatmulWeights` lays out for the family's matmul schedule
    (0: no packing). CPUs: the column tile of schedules/cpu.py `Matmul` (two vector registers:
    16 fp32 with AVX2, 8 on NEON, 32 with AVX-512); Hexagon: one HVX register (32 fp32), as
    schedules/hexagon.py vectorizes; Mali: none (its GPU matmul rule stages tiles through
    shared memory, where the layout in global memory matters little)."""
    if family == "mali" or target is None or target.kind.name != "llvm":
        return 0
    if family == "hexagon":
        return fp32_lanes(target)
    return column_tile(target)


def project_rules(family: str) -> list:
    path = SCHEDULES_DIR / f"{family}.py"
    if not path.is_file():
        return []
    spec = importlib.util.spec_from_file_location(f"tvm_conformer_schedules_{family}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return list(getattr(module, "RULES", []))


def kernel_flops(func: tirx.PrimFunc) -> float:
    """Floating-point operations of one call of `func` (TVM's estimate from its loops)."""
    return float(s_tir.analysis.estimate_tir_flops(tvm.IRModule({"main": func})))


def run_serially(sch: s_tir.Schedule) -> s_tir.Schedule:
    """Every parallel loop of the scheduled kernel made serial (split by an outer unit loop:
    the schedule language has no primitive that clears a loop's kind, and the split of a
    parallel loop yields serial loops, which replay from a trace like any other primitive)."""
    todo = [sch.get_sblock("root")]
    while todo:
        block = todo.pop()
        for loop in sch.get_loops(block):
            if sch.get(loop).kind == tirx.ForKind.PARALLEL:
                sch.split(loop, factors=[1, None])
        todo.extend(sch.get_child_blocks(block))
    return sch


class ThreadPolicy(dl.ScheduleRule):
    """`rule`, its schedules run on one thread when the kernel computes < `min_flops`
    (0: as `rule` chose; infinity: always)."""

    def __init__(self, rule: dl.ScheduleRule, min_flops: float) -> None:
        self.rule = rule
        self.min_flops = min_flops

    def is_target_available(self, target: Target) -> bool:
        return self.rule.is_target_available(target)

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool):  # noqa: ANN201
        if not isinstance(func, tirx.PrimFunc):
            return None
        out = self.rule.apply(func, target, tunable)
        if out is None or self.min_flops <= 0 or target.kind.name != "llvm":
            return out
        if self.min_flops != float("inf") and kernel_flops(func) >= self.min_flops:
            return out
        return [run_serially(s) for s in out] if isinstance(out, list) else run_serially(out)

    def __repr__(self) -> str:
        return f"ThreadPolicy({type(self.rule).__name__}, min_flops={self.min_flops})"


def rule_list(family: str, parallel_min_flops: float = 0) -> list[dl.ScheduleRule]:
    """The family's rules in the order they are tried, under the thread policy."""
    if family == "mali":
        defaults = [dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(),
                    dl.gpu.GeneralReduction(), dl.gpu.Fallback()]
        int8: list = []
    else:  # cpu and hexagon both go through the LLVM CPU code generator
        defaults = [dl.cpu.GEMV(), dl.cpu.Reduction()]
        int8 = project_rules("int8")  # int8 linears (schedules/int8.py); none in fp32 builds
    return [ThreadPolicy(r, parallel_min_flops)
            for r in (*int8, *project_rules(family), *defaults)]


def family_rules(family: str, parallel_min_flops: float = 0) -> tvm.transform.Pass:
    """One pass that schedules every still-unscheduled kernel the family's rules can handle.
    It returns a new module: dlight's `ApplyDefaultSchedule` stores the scheduled kernels into
    the module it was given, which would change a module the caller still holds."""
    apply = dl.ApplyDefaultSchedule(*rule_list(family, parallel_min_flops))

    @tvm.transform.module_pass(opt_level=0, name="FamilyRules")
    def _rules(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        fresh = tvm.IRModule(dict(mod.functions_items()), attrs=mod.attrs,
                             global_infos=mod.global_infos)
        return apply(fresh)

    return _rules
