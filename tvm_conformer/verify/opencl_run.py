"""Every OpenCL kernel of a GPU build run on an OpenCL platform of this machine (PoCL) and
compared with the same PrimFunc compiled by TVM for the host CPU (`llvm`), on the same inputs.

The artifact's `kernels.json` (`compiler/kernels.py`) says, per kernel function, its buffers
and its launches: the OpenCL kernels in order, their operands, grid and work-group. Each
function gets seeded inputs (fp32 uniform in [-1, 1], fp16 in [0, 1], masks and booleans 0/1);
every buffer lies inside a larger allocation whose guard bytes before and after it must be unchanged after
the launches (an out-of-bounds write), inputs must be unchanged, and outputs start as NaN bytes
(an element the kernels never write fails the comparison). Launches run as TVM's OpenCL
runtime does them: global size = grid x work-group per dimension, each kernel's program built
from its own `// Function:` section of the source. Work-groups are checked against the
target's `max_work_group_size` and `local_mem_bytes`, as a driver would refuse them.

fp16 kernels: Debian's PoCL has no `cl_khr_fp16`, so on such a device the kernels run with
`half` defined as `float` (`half` buffers hold the same values as float32): indexing, bounds,
launch shapes and logic are checked exactly; the arithmetic is float32, compared with the
llvm build's fp16 within FP16_TOL.
"""

from __future__ import annotations

import json
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tvm_conformer.compiler.artifact import MANIFEST, read_manifest
from tvm_conformer.compiler.kernels import KERNELS_JSON
from tvm_conformer.compiler.link import OPENCL_SOURCE

FP32_TOL = 1e-4  # max |opencl - llvm| / max |llvm|, per output
# fp16: the llvm build accumulates in half, PoCL (half as float) in float: the shipped model's
# subsampling output linear (the longest reduction) differs by 6.8e-2; a wrong index errs by O(1)
FP16_TOL = 1e-1
# fp16 inputs are non-negative: the fp16 LayerNorm takes its statistics (mean absolute deviation,
# sum of squares) as inputs, never negative in a real run; negative ones make half and float
# arithmetic diverge (NaN, cancellation) where no kernel is wrong
FP16_INPUTS = (0.0, 1.0)
GUARD = 4096  # bytes before and after every buffer (a multiple of PoCL's base alignment)
_GUARD_BYTE, _UNSET_BYTE = 0xA5, 0xFF  # 0xFFFF... is a NaN in fp16 and fp32
_FP16_PRAGMA = re.compile(r"^#ifdef cl_khr_fp16\n.*?^#endif\n", re.M | re.S)
MASK_NAMES = ("att_mask",)
MAX_FAILURES = 20  # listed in the manifest  # inputs of the step that are 0/1 masks
# `half` as `float`: the codegen's vector types and conversions (see the module docstring)
_HALF_AS_FLOAT = "".join(f"#define {h} {f}\n" for h, f in (
    [("half", "float")] + [(f"half{n}", f"float{n}") for n in (2, 3, 4, 8, 16)]
    + [(f"convert_half{n}", f"convert_float{n}") for n in ("", 2, 3, 4, 8, 16)]))


@dataclass
class RunResult:
    """What `checks.opencl_run` records; `run` None: not run (see `reason`)."""

    kernels: int
    run: int | None = None
    passed: int = 0
    worst_error: float | None = None
    device: str | None = None
    reason: str = ""
    failures: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = {"kernels": self.kernels, "run": self.run, "passed": self.passed,
             "worst_error": self.worst_error, "device": self.device}
        if self.run is None:
            d["not_run"] = self.reason
        if self.failures:
            d["failures"] = self.failures[:MAX_FAILURES] + \
                [f"... {len(self.failures) - MAX_FAILURES} more"] * (len(self.failures) > MAX_FAILURES)
        return d

    @property
    def ok(self) -> bool | None:
        return None if self.run is None else (self.passed == self.kernels and not self.failures)

    def summary(self) -> str:
        if self.run is None:
            return f"not run: {self.reason}"
        text = (f"{self.passed}/{self.kernels} kernels match the llvm build on {self.device} "
                f"({self.run} launched), worst error {self.worst_error:.2g}")
        return text + ("; " + "; ".join(self.failures[:3]) if self.failures else "")


def kernel_sources(source: str) -> dict[str, str]:
    """Kernel name -> its `// Function: NAME` section of the OpenCL C (what TVM's OpenCL
    runtime builds as one program per kernel)."""
    parts = re.split(r"^// Function: (\S+)\s*$", source, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def _seeded_input(name: str, shape: list[int], dtype: str, rng: np.random.Generator) -> np.ndarray:
    if dtype == "bool":
        return rng.random(shape) < 0.5
    if name in MASK_NAMES:
        return (rng.random(shape) < 0.7).astype(dtype)
    if dtype == "float16":  # see FP16_INPUTS
        return rng.uniform(*FP16_INPUTS, shape).astype(dtype)
    if dtype.startswith("float"):
        return rng.uniform(-1, 1, shape).astype(dtype)
    if dtype.startswith(("int", "uint")):
        # positions (a contract model's `offset`) and gather indices (`take`): 0 and 1 are in
        # range for any axis of extent >= 2, which every gathered axis of a step has
        return rng.integers(0, 2, shape).astype(dtype)
    raise ValueError(f"input {name} is {dtype}: no known value range")


def _error(got: np.ndarray, ref: np.ndarray) -> float:
    """max |got - ref| / max |ref| (exact match for booleans); inf where NaN differs."""
    if ref.dtype == bool:
        return float(np.mean(got.view(np.uint8) != ref.view(np.uint8)))
    got, ref = got.astype(np.float64), ref.astype(np.float64)
    if not np.array_equal(np.isnan(got), np.isnan(ref)):
        return float("inf")
    finite = ~np.isnan(ref)
    scale = max(float(np.abs(ref[finite]).max(initial=0.0)), 1e-30)
    return float(np.abs(got[finite] - ref[finite]).max(initial=0.0)) / scale


class _Device:
    """An OpenCL context and queue on the first device of the first platform."""

    def __init__(self) -> None:
        import pyopencl as cl

        self.cl = cl
        platform = cl.get_platforms()[0]
        self.device = platform.get_devices()[0]
        self.name = f"{platform.name} / {self.device.name}"
        self.context = cl.Context([self.device])
        self.queue = cl.CommandQueue(self.context)
        self.fp16 = "cl_khr_fp16" in self.device.extensions
        self.programs: dict[str, object] = {}

    def storage(self, dtype: str) -> str:
        """The dtype a buffer of `dtype` has on this device."""
        return "float32" if dtype == "float16" and not self.fp16 else dtype

    def kernel(self, name: str, source: str):  # noqa: ANN201 - pyopencl.Kernel
        if name not in self.programs:
            if "half" in source and not self.fp16:  # TVM's pragma block would #error
                source = _HALF_AS_FLOAT + _FP16_PRAGMA.sub("", source, count=1)
            self.programs[name] = self.cl.Program(self.context, source).build()
        return self.cl.Kernel(self.programs[name], name)


def _reference(lib, name: str, arrays: list[np.ndarray]) -> list[np.ndarray]:  # noqa: ANN001
    """`name` of `lib` (the reference PrimFuncs built for llvm) run on copies of `arrays`."""
    import tvm

    tensors = [tvm.runtime.tensor(a) for a in arrays]
    lib[name](*tensors)
    return [t.numpy() for t in tensors]


def _run_function(dev: _Device, record: dict, sources: dict[str, str], limits: dict,
                  rng: np.random.Generator, lib) -> tuple[float, list[str], int]:  # noqa: ANN001
    """(error, failures, kernels launched) of one kernel function against its llvm build."""
    cl = dev.cl
    bufs = record["buffers"]
    arrays = [np.full(b["shape"], 0, b["dtype"]) if b["written"]
              else _seeded_input(b["name"], b["shape"], b["dtype"], rng) for b in bufs]
    ref = _reference(lib, record["name"], arrays)
    mf = cl.mem_flags
    hosts, parents, views = [], [], []
    stored = [a.astype(dev.storage(b["dtype"])) for b, a in zip(bufs, arrays, strict=True)]
    for b, a in zip(bufs, stored, strict=True):
        host = np.full(a.nbytes + 2 * GUARD, _GUARD_BYTE, np.uint8)
        host[GUARD:GUARD + a.nbytes] = _UNSET_BYTE if b["written"] else a.reshape(-1).view(np.uint8)
        parent = cl.Buffer(dev.context, mf.READ_WRITE | mf.COPY_HOST_PTR, hostbuf=host)
        hosts.append(host)
        parents.append(parent)
        views.append(parent.get_sub_region(GUARD, max(a.nbytes, 1)))
    failures, launched = [], 0
    for launch in record["launches"]:
        name, wg = launch["kernel"], launch["work_group"]
        items = int(np.prod(wg))
        if limits.get("max_work_group_size") and items > limits["max_work_group_size"]:
            failures.append(f"{name}: work-group {wg} of {items} work items exceeds the "
                            f"device's {limits['max_work_group_size']} (target file)")
            continue
        kernel = dev.kernel(name, sources[name])
        local = kernel.get_work_group_info(cl.kernel_work_group_info.LOCAL_MEM_SIZE, dev.device)
        local += launch["dyn_shared_bytes"]
        if limits.get("local_mem_bytes") and local > limits["local_mem_bytes"]:
            failures.append(f"{name}: {local} bytes of local memory exceed the device's "
                            f"{limits['local_mem_bytes']} (target file)")
            continue
        if kernel.num_args != len(launch["args"]):
            failures.append(f"{name}: the OpenCL kernel takes {kernel.num_args} arguments, "
                            f"kernels.json records {len(launch['args'])}")
            continue
        for i, arg in enumerate(launch["args"]):
            value = views[arg["buffer"]] if "buffer" in arg else np.array(arg["value"], arg["scalar"])
            kernel.set_arg(i, value)
        dims = launch["work_dim"]
        global_size = tuple(g * w for g, w in zip(launch["grid"][:dims], wg[:dims], strict=True))
        cl.enqueue_nd_range_kernel(dev.queue, kernel, global_size, tuple(wg[:dims]))
        launched += 1
    worst = 0.0
    for b, a, host, parent, r in zip(bufs, stored, hosts, parents, ref, strict=True):
        out = np.empty_like(host)
        cl.enqueue_copy(dev.queue, out, parent)
        n = a.nbytes
        if (out[:GUARD] != _GUARD_BYTE).any() or (out[GUARD + n:] != _GUARD_BYTE).any():
            before = int((out[:GUARD] != _GUARD_BYTE).sum())
            after = int((out[GUARD + n:] != _GUARD_BYTE).sum())
            failures.append(f"{record['name']}: writes outside {b['name']} "
                            f"({before} bytes before it, {after} after)")
        got = out[GUARD:GUARD + n].view(a.dtype).reshape(a.shape)
        if not b["written"]:
            if not np.array_equal(got.reshape(-1).view(np.uint8), a.reshape(-1).view(np.uint8)):
                failures.append(f"{record['name']}: input {b['name']} was overwritten")
            continue
        worst = max(worst, _error(got, r))
    return worst, failures, launched


def run_kernels(art_dir: str | Path, seed: int = 0) -> RunResult:
    """Every kernel of the artifact launched on this machine's OpenCL device and compared with
    the llvm build of its PrimFunc; not run (with the reason) where that cannot be done."""
    art = Path(art_dir)
    manifest = read_manifest(art)
    source_path, records_path = art / OPENCL_SOURCE, art / KERNELS_JSON
    if not records_path.is_file() or not source_path.is_file():
        return RunResult(0, reason=f"{KERNELS_JSON} or {OPENCL_SOURCE} missing; "
                         "rebuild with `tvm-conformer compile`")
    sources = kernel_sources(source_path.read_text())
    result = RunResult(len(sources))
    content = json.loads(records_path.read_text())
    records = content["functions"]
    try:
        dev = _Device()
    except ImportError:
        result.reason = "pyopencl is not installed (pip install -r requirements.lock)"
        return result
    except Exception as exc:  # pyopencl raises its own LogicError/RuntimeError without a platform
        result.reason = (f"no OpenCL platform here ({str(exc).splitlines()[0][:80]}); "
                         "apt-get install pocl-opencl-icd")
        return result
    import tvm

    lib = tvm.tirx.build(tvm.ir.load_json(content["reference_tir"]), target="llvm")
    precision = manifest["pipeline"]["precision"]
    tol = FP32_TOL if precision == "fp32" else FP16_TOL
    result.device, result.run, result.worst_error = dev.name, 0, 0.0
    launched = {ln["kernel"] for r in records for ln in r["launches"]}
    for name in sorted(set(sources) - launched):
        result.failures.append(f"{name}: in {OPENCL_SOURCE} but launched by no function")
    for record in records:
        names = [ln["kernel"] for ln in record["launches"]]
        if record.get("unsupported") or not record.get("reference"):
            result.failures.append(f"{record['name']}: not run "
                                   f"({record.get('unsupported') or 'no reference TIR'})")
            continue
        rng = np.random.default_rng([seed, zlib.crc32(record["name"].encode())])
        try:
            error, failures, launched = _run_function(dev, record, sources, manifest["target"],
                                                      rng, lib)
        except (ValueError, dev.cl.Error) as exc:
            error, failures, launched = float("inf"), [f"{record['name']}: {str(exc).splitlines()[0]}"], 0
        result.run += launched
        result.worst_error = max(result.worst_error, error)
        if error > tol:
            failures.append(f"{record['name']}: error {error:.3g} over {tol:g}")
        result.failures += failures
        if not failures:
            result.passed += len(names)
    return result


def record_result(art_dir: str | Path, result: RunResult) -> None:
    """`result` into the artifact's manifest as `checks.opencl_run` (the manifest is not among
    the hashed files, so the artifact stays valid)."""
    path = Path(art_dir) / MANIFEST
    manifest = json.loads(path.read_text())
    manifest.setdefault("checks", {})["opencl_run"] = result.to_dict()
    path.write_text(json.dumps(manifest, indent=1, sort_keys=True))
