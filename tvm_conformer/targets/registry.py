"""Load and validate device files from `targets/` (TOML); `host` describes this machine."""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tvm_conformer.errors import UserError
from tvm_conformer.paths import TARGETS_DIR

FAMILIES = ("cpu", "mali", "hexagon")
LINKERS = ("cc", "lld")


@dataclass(frozen=True)
class DeviceTarget:
    """One device: how to compile for it, link for it, reach it, and its peak figures."""

    name: str
    description: str
    family: str  # cpu | mali | hexagon: picks the schedule rules
    tvm_target: dict[str, Any]  # TVM target in JSON-dict form; {"mcpu": "host"} = this CPU
    host: dict[str, Any] | None = None  # host target for GPU targets
    cc: str | None = None  # cross compiler/linker (None: the system's default `g++`)
    cc_options: list[str] = field(default_factory=list)
    linker: str = "cc"  # "cc" (export_library with cc) or "lld" (Hexagon: ld.lld -shared)
    elf_machine: str | None = None  # what `readelf -h` must report, e.g. "AArch64"
    rpc_key: str | None = None
    threads: int = 1
    clock_ghz: float = 1.0
    simd_bits: int = 128
    fma_units: int = 1  # vector FMA pipes per core
    cores: int = 1
    fp16_rate: float = 1.0  # fp16 peak / fp32 peak: 2 where the SIMD units compute in half
    mem_bandwidth_gbs: float = 10.0
    # GPU limits a driver enforces at launch (CL_DEVICE_MAX_WORK_GROUP_SIZE, _LOCAL_MEM_SIZE)
    max_work_group_size: int | None = None
    local_mem_bytes: int | None = None
    path: str = ""

    @property
    def is_host(self) -> bool:
        return self.name == "host"

    def tvm(self):  # noqa: ANN201 - tvm.target.Target, imported lazily
        """The `tvm.target.Target`, with this machine's CPU filled in for `mcpu = "host"`."""
        import tvm

        def resolve(d: dict[str, Any]) -> dict[str, Any]:
            d = dict(d)
            if d.get("mcpu") == "host":
                d["mcpu"] = tvm.get_global_func("target.llvm_get_system_cpu")()
            if d.get("num-cores") == "host":
                d["num-cores"] = os.cpu_count() or 1
            return d

        try:
            if self.host:
                return tvm.target.Target(resolve(self.tvm_target), host=resolve(self.host))
            return tvm.target.Target(resolve(self.tvm_target))
        except Exception as exc:
            raise UserError(
                f"{self.path}: tvm_target is not a valid TVM target ({str(exc).splitlines()[0]}); "
                "write it in JSON-dict form, e.g. {kind = \"llvm\", mtriple = \"aarch64-linux-gnu\"}"
            ) from None

    def peak_gflops(self, precision: str = "fp32") -> float:
        """Peak: cores * clock * fp32 SIMD lanes * 2 (FMA) * FMA pipes, times fp16_rate in fp16."""
        fp32 = self.cores * self.clock_ghz * (self.simd_bits / 32) * 2 * self.fma_units
        return fp32 * (self.fp16_rate if precision == "fp16" else 1.0)


_FIELDS = {f.name: f for f in dataclasses.fields(DeviceTarget) if f.name != "path"}
_REQUIRED = ("name", "description", "family", "tvm_target")


def _accepted(hint: Any) -> tuple[type, ...]:
    """The Python types a TOML value may have for a field annotated `hint` (None: absent)."""
    if isinstance(hint, types.UnionType):
        return tuple(t for arg in typing.get_args(hint) if arg is not type(None) for t in _accepted(arg))
    origin = typing.get_origin(hint) or hint
    return (int, float) if origin is float else (origin,)


_TYPES = {name: _accepted(hint) for name, hint in typing.get_type_hints(DeviceTarget).items()
          if name in _FIELDS}
# (lowest, highest) a device may have: a number outside is a typo, not hardware (and NaN or
# infinity would turn every estimate into `RTF >= nan`); float lower bounds are exclusive
_RANGES = {"threads": (1, 1024), "cores": (1, 4096), "fma_units": (1, 64),
           "clock_ghz": (0.0, 10.0), "fp16_rate": (0.0, 64.0), "mem_bandwidth_gbs": (0.0, 1e5),
           "max_work_group_size": (1, 1 << 16), "local_mem_bytes": (1, 1 << 30)}
_SIMD_BITS = (32, 64, 128, 256, 512, 1024, 2048)


def _check_type(path: Path, key: str, value: Any) -> None:
    want = _TYPES[key]
    # TOML booleans are Python ints: `cores = true` must not pass as 1
    if isinstance(value, bool) or not isinstance(value, want):
        kind = "number" if float in want else want[0].__name__
        raise UserError(f"{path}: field {key!r} must be a {kind}, not {type(value).__name__} "
                        f"({value!r})")
    if key == "cc_options" and not all(isinstance(o, str) for o in value):
        raise UserError(f"{path}: field 'cc_options' must be a list of strings")
    if key in _RANGES:
        low, high = _RANGES[key]
        inside = (low < value <= high) if isinstance(low, float) else (low <= value <= high)
        if not (math.isfinite(value) and inside):
            raise UserError(f"{path}: field {key!r} must be {'above' if isinstance(low, float) else 'at least'} "
                            f"{low} and at most {high}, not {value!r}")
    if key == "simd_bits" and value not in _SIMD_BITS:
        raise UserError(f"{path}: field 'simd_bits' must be one of {', '.join(map(str, _SIMD_BITS))}, "
                        f"not {value!r}")


def _validate(raw: dict[str, Any], path: Path) -> DeviceTarget:
    unknown = sorted(set(raw) - set(_FIELDS))
    if unknown:
        raise UserError(f"{path}: unknown field {unknown[0]!r}; allowed fields: {', '.join(_FIELDS)}")
    for name in _REQUIRED:
        if name not in raw:
            raise UserError(f"{path}: missing required field {name!r}")
    for key, value in raw.items():
        _check_type(path, key, value)
    if raw["family"] not in FAMILIES:
        raise UserError(f"{path}: family {raw['family']!r} is not one of {', '.join(FAMILIES)}")
    if raw.get("linker", "cc") not in LINKERS:
        raise UserError(f"{path}: linker {raw['linker']!r} is not one of {', '.join(LINKERS)}")
    if raw["name"] != path.stem:
        raise UserError(f"{path}: name {raw['name']!r} must equal the file name {path.stem!r}")
    if "kind" not in raw["tvm_target"]:
        raise UserError(f"{path}: tvm_target needs a 'kind' (e.g. \"llvm\" or \"opencl\")")
    return DeviceTarget(**raw, path=str(path))


def load_target(name_or_path: str, targets_dir: Path | None = None) -> DeviceTarget:
    """A device by name (a file in `targets/`) or by path to a TOML file."""
    targets_dir = TARGETS_DIR if targets_dir is None else targets_dir
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = targets_dir / f"{name_or_path}.toml"
    if not path.is_file():
        problems: list[str] = []
        known = ", ".join(t.name for t in list_targets(targets_dir, problems)) if targets_dir.is_dir() else ""
        unreadable = f"; unreadable: {', '.join(Path(p.split(':')[0]).name for p in problems)}" if problems else ""
        raise UserError(f"unknown target {name_or_path!r}; known: {known}{unreadable} "
                        "(or add targets/NAME.toml)")
    try:
        raw = tomllib.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: not valid TOML ({exc}); fix the syntax") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot be read ({exc.strerror})") from None
    return _validate(raw, path)


def list_targets(targets_dir: Path | None = None, errors: list[str] | None = None) -> list[DeviceTarget]:
    """Every device in `targets_dir`, sorted by name. With `errors`, a file that does not load
    is left out and its one-line message appended there; without, it raises UserError."""
    targets_dir = TARGETS_DIR if targets_dir is None else targets_dir
    found = []
    for p in sorted(targets_dir.glob("*.toml")):
        try:
            found.append(load_target(str(p)))
        except UserError as exc:
            if errors is None:
                raise
            errors.append(str(exc))
    return found
