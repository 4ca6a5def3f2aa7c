"""Schedule rules per target family: dlight's, then the project's own from `schedules/`.

A file `schedules/<family>.py` may define `RULES`, a list of dlight `ScheduleRule`s tried
before dlight's defaults, so hand-written rules for the hot kernels win where they apply.
"""

from __future__ import annotations

import importlib.util

import tvm
from tvm.s_tir import dlight as dl

from tvm_conformer.paths import SCHEDULES_DIR


def project_rules(family: str) -> list:
    path = SCHEDULES_DIR / f"{family}.py"
    if not path.is_file():
        return []
    spec = importlib.util.spec_from_file_location(f"tvm_conformer_schedules_{family}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return list(getattr(module, "RULES", []))


def family_rules(family: str) -> tvm.transform.Pass:
    """One pass that schedules every still-unscheduled kernel the family's rules can handle."""
    if family == "mali":
        defaults = [dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(),
                    dl.gpu.GeneralReduction(), dl.gpu.Fallback()]
    else:  # cpu and hexagon both go through the LLVM CPU code generator
        defaults = [dl.cpu.GEMV(), dl.cpu.Reduction()]
    return dl.ApplyDefaultSchedule(*project_rules(family), *defaults)
