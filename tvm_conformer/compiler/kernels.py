"""What launching a GPU build's kernels takes, recorded at compile time (`kernels.json`).

TVM's lowering splits each scheduled PrimFunc into a host function and one or more device
kernels (`NAME_kernel`, `NAME_kernel_1`, ...; `tirx.SplitHostDevice`); the host function then
calls each with `call_ffi_kernel(kernel, operands..., launch values...)`. The operands are in
the device kernel's parameter order (what the OpenCL codegen emits and TVM's OpenCL runtime
passes to `clSetKernelArg`), the launch values follow the kernel's `launch_params` tags
(`blockIdx.*` grid extents, `threadIdx.*` work-group extents). `KernelRecorder` sees the module
just before `tirx.MakePackedAPI`, where host functions still have their typed buffers, and
`launch_records` turns it into, per host function: its buffers (shape, dtype, written or read),
every launch (kernel, operands as buffer indices or scalar values, grid, work-group); and, as the
reference to compare with, the unscheduled PrimFuncs the rules started from (TVM's JSON form).
"""

from __future__ import annotations

import tvm
import tvm_ffi
from tvm import tirx
from tvm.ir.expr import Call

KERNELS_JSON = "kernels.json"
FORMAT = 1
_DYN_SHARED = "tirx.use_dyn_shared_memory"
_FLAGS = ("tirx.use_programtic_dependent_launch", "tirx.use_cooperative_launch")


@tvm.instrument.pass_instrument
class KernelRecorder:
    """Keeps the module that enters `tirx.MakePackedAPI` when it holds device kernels."""

    def __init__(self) -> None:
        self.module: tvm.IRModule | None = None

    def run_before_pass(self, mod: tvm.IRModule, info: tvm.transform.PassInfo) -> None:
        if info.name == "tirx.MakePackedAPI" and any(_is_device(f) for f in mod.functions.values()):
            self.module = mod


def _is_device(func: tvm.ir.BaseFunc) -> bool:
    return isinstance(func, tirx.PrimFunc) and func.attrs is not None and \
        int(func.attrs.get("calling_conv", 0)) == 2  # CallingConv::kDeviceKernelLaunch


def _int(expr: tirx.IntImm, what: str) -> int:
    if not isinstance(expr, tirx.IntImm):
        raise ValueError(f"{what} is not a constant ({expr})")
    return int(expr.value)


def _calls(body: tirx.Stmt) -> list[Call]:
    found: list[Call] = []
    tvm_ffi.structural_walk(body, (Call, found.append))
    return [c for c in found if isinstance(c.op, tvm.ir.Op) and c.op.name == "tirx.call_ffi_kernel"]


class _Roots:
    """The variable a buffer or pointer expression of `func` finally stands for: lowered TIR
    declares flat views (`T.decl_buffer(data=X.data)`) of the parameters and uses those."""

    def __init__(self, func: tirx.PrimFunc) -> None:
        decls: list = []
        tvm_ffi.structural_walk(func.body, (tirx.DeclBuffer, decls.append))
        self.decls = [(d.buffer, d.data) for d in decls]

    def __call__(self, expr: tvm.ir.Node) -> tvm.ir.Node:
        if isinstance(expr, Call) and expr.op.same_as(tvm.ir.Op.get("tirx.buffer_data")):
            return self(expr.args[0])
        data = next((d for b, d in self.decls if b.same_as(expr)), None)
        return expr if data is None else self(data)


def _stored(kernel: tirx.PrimFunc) -> list[tvm.ir.Node]:
    """The parameters of a device kernel it stores into."""
    stores: list = []
    tvm_ffi.structural_walk(kernel.body, (tirx.BufferStore, stores.append))
    root = _Roots(kernel)
    return [root(s.buffer) for s in stores]


def _launch(call: Call, mod: tvm.IRModule, buffers: list, root: _Roots,
            written: set[int]) -> dict:
    name = str(call.args[0].value)
    kernel = mod[name]
    n = len(kernel.params)
    operands, values = call.args[1:1 + n], list(call.args[1 + n:])
    stored = _stored(kernel)
    args = []
    for i, (param, expr) in enumerate(zip(kernel.params, operands, strict=True)):
        index = next((j for j, b in enumerate(buffers) if b.same_as(root(expr))), None)
        if index is not None:
            args.append({"buffer": index})
            if any(v.same_as(param) for v in stored):
                written.add(index)
        elif isinstance(param.ty, tvm.ir.PointerType):
            raise ValueError(f"operand {i} of {name} is no buffer of the function ({expr})")
        else:
            value = expr.value if isinstance(expr, tirx.IntImm | tirx.FloatImm) else None
            if value is None:
                raise ValueError(f"scalar operand {i} of {name} is not a constant ({expr})")
            args.append({"scalar": str(param.ty), "value": value})
    grid, block, dyn_shared = [1, 1, 1], [1, 1, 1], 0
    tags = [str(t) for t in call.attrs.launch_params if str(t) not in _FLAGS]
    for tag, value in zip(tags, values, strict=True):
        if tag == _DYN_SHARED:
            dyn_shared = _int(value, f"{name}'s dynamic shared memory")
        else:
            dims = grid if tag.startswith("blockIdx.") else block
            dims["xyz".index(tag[-1])] = _int(value, f"{name}'s {tag} extent")
    return {"kernel": name, "args": args, "grid": grid, "work_group": block,
            "work_dim": max([i + 1 for i in range(3) if grid[i] > 1 or block[i] > 1] or [1]),
            "dyn_shared_bytes": dyn_shared}


def launch_records(lowered: tvm.IRModule, reference: tvm.IRModule) -> dict:
    """The content of `kernels.json`: for every host function of `lowered` that launches device
    kernels, its buffers and its launches in order; and the functions of the same names in
    `reference` (the unscheduled TIR) as one IRModule in `tvm.ir.save_json` form."""
    functions = []
    names = {gv.name_hint for gv, f in reference.functions.items() if isinstance(f, tirx.PrimFunc)}
    for gv, func in sorted(lowered.functions.items(), key=lambda kv: kv[0].name_hint):
        if not isinstance(func, tirx.PrimFunc) or _is_device(func):
            continue
        calls = _calls(func.body)
        if not calls:
            continue
        buffers = [p for p in func.params if isinstance(p.ty, tirx.buffer.BufferType)]
        name = gv.name_hint
        record: dict = {"name": name}
        try:
            written: set[int] = set()
            root = _Roots(func)
            record["launches"] = [_launch(c, lowered, buffers, root, written) for c in calls]
        except ValueError as exc:
            record["launches"], record["unsupported"] = [], str(exc)
            written = set()
        record["buffers"] = [{"name": b.name, "shape": [int(s) for s in b.ty.shape],
                              "dtype": str(b.ty.dtype), "written": i in written}
                             for i, b in enumerate(buffers)]
        record["reference"] = name in names and name
        functions.append(record)
    refs = {n: reference[n].with_attr("global_symbol", n)
            for n in sorted(names & {f["name"] for f in functions})}
    return {"format": FORMAT, "functions": functions,
            "reference_tir": tvm.ir.save_json(tvm.IRModule(refs))}
