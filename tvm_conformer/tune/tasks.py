"""Tuning tasks: the kernels of the module that the `tvm_conformer` pipeline fuses, by group.

`extract_tasks` runs the SAME pipeline as `compile` (its phases 1-2, up to the "fused" module)
and hands that module to MetaSchedule's task extraction, so tuned records match the kernels
that `compile` later looks up. `select_tasks` picks tasks by group or by a regex on names.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import tvm
import tvm_ffi
from tvm import s_tir, tirx

from tvm_conformer.compiler.blocks import CONV_BLOCKS, operands, reads_one_channel
from tvm_conformer.errors import UserError

if TYPE_CHECKING:
    from tvm.s_tir.meta_schedule import ExtractedTask

    from tvm_conformer.compiler.pipeline import PipelineOptions
    from tvm_conformer.targets import DeviceTarget

# depthwise: the depthwise convs (subsampling, convolution modules); conv: every conv;
# attention: the batched matmuls and the softmax of self-attention; all: every kernel.
GROUPS = ("depthwise", "conv", "attention", "all")


def _blocks(func: tirx.PrimFunc) -> list[s_tir.SBlock]:
    found: list[s_tir.SBlock] = []
    tvm_ffi.structural_walk(func.body, (s_tir.SBlock, found.append))
    return [b for b in found if b.name_hint != "root"]


def _is_batched_matmul(block: s_tir.SBlock) -> bool:
    """A `matmul` block with a batch axis (heads) besides rows and columns."""
    spatial = [iv for iv in block.iter_vars
               if iv.iter_type == tirx.IterVar.DataPar and int(iv.dom.extent) > 1]
    return block.name_hint == "matmul" and len(spatial) >= 3


def kernel_groups(func: tirx.PrimFunc) -> frozenset[str]:
    """The groups of GROUPS a kernel belongs to."""
    groups = {"all"}
    for block in _blocks(func):
        name = block.name_hint
        if any(conv in name for conv in CONV_BLOCKS):
            groups.add("conv")
            if reads_one_channel(block) and int(operands(block)[0].source.shape[1]) > 1:
                groups.add("depthwise")  # one input channel (the first conv) is not depthwise
        if _is_batched_matmul(block) or name == "T_softmax_norm":  # not the CTC's log_softmax
            groups.add("attention")
    return frozenset(groups)


@dataclass(frozen=True)
class Task:
    """One kernel to tune: `weight` calls of it per streaming step."""

    name: str
    weight: int
    groups: frozenset[str]
    extracted: ExtractedTask = dataclasses.field(repr=False, compare=False)

    @property
    def mod(self) -> tvm.IRModule:
        """The kernel as MetaSchedule tunes it (an IRModule with one PrimFunc `main`)."""
        return self.extracted.dispatched[0]


def fused_module(mod: tvm.IRModule, device: DeviceTarget, opts: PipelineOptions) -> tvm.IRModule:
    """`mod` after the pipeline's phase 2 (operators lowered to TIR and fused), for `device`."""
    from tvm_conformer.compiler.pipeline import tvm_conformer_pipeline

    captured: dict[str, tvm.IRModule] = {}

    def observe(phase: str, m: tvm.IRModule) -> None:
        if phase == "fused":
            captured["mod"] = m

    # Phases 3-4 then run on unscheduled kernels: no database, no rules, no code generation.
    plain = dataclasses.replace(opts, database=None, schedules=False)
    with device.tvm():
        # the weight transform is lifted out as `compile` does (it runs once: not a task)
        tvm_conformer_pipeline(plain, observe=observe, lift_weights=lambda _f: None)(mod)
    return captured["mod"]


def extract_tasks(
    model: str | Path, device: DeviceTarget, opts: PipelineOptions, frontend: str = "torch"
) -> list[Task]:
    """The step's kernels for `device`, heaviest group first: convs, attention, the rest."""
    from tvm.s_tir import meta_schedule as ms

    from tvm_conformer.compiler.compile import import_for_pipeline
    from tvm_conformer.compiler.source import open_model

    mod, _weights = import_for_pipeline(open_model(model), frontend, opts)
    fused = fused_module(mod, device, opts)
    tasks = [
        Task(t.task_name, int(t.weight), kernel_groups(t.dispatched[0]["main"]), t)
        for t in ms.relax_integration.extract_tasks(fused, device.tvm())
    ]
    return sorted(tasks, key=lambda t: ("conv" not in t.groups, "attention" not in t.groups,
                                        -t.weight, t.name))


def select_tasks(tasks: list[Task], spec: str) -> list[Task]:
    """Tasks in group `spec` (one of GROUPS), else those whose name matches the regex `spec`."""
    if spec in GROUPS:
        chosen = [t for t in tasks if spec in t.groups]
    else:
        try:
            pattern = re.compile(spec)
        except re.error as exc:
            raise UserError(f"--tasks {spec!r} is neither a group ({', '.join(GROUPS)}) nor a "
                            f"valid regex ({exc})") from None
        chosen = [t for t in tasks if pattern.search(t.name)]
    if not chosen:
        names = ", ".join(t.name for t in tasks[:5])
        raise UserError(f"--tasks {spec!r} selects no kernel; groups: {', '.join(GROUPS)}; "
                        f"kernel names look like: {names}, ...")
    return chosen
