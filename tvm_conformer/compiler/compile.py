"""`compile_artifact`: checkpoint or contract ONNX file -> Relax -> the `tvm_conformer` pipeline
-> artifact dir."""

from __future__ import annotations

import dataclasses
import json
import platform
import sys
import time
import warnings
from pathlib import Path

from tvm_conformer.compiler.artifact import LIB, WEIGHTS, save_weights, sha256_file, write_manifest
from tvm_conformer.compiler.kernels import KERNELS_JSON, KernelRecorder, launch_records
from tvm_conformer.compiler.link import OPENCL_SOURCE
from tvm_conformer.compiler.pipeline import (
    PipelineOptions,
    kernel_calls,
    kernel_names,
    unscheduled_kernels,
)
from tvm_conformer.compiler.source import ModelSource, open_model
from tvm_conformer.errors import UserError
from tvm_conformer.paths import DEFAULT_CHECKPOINT
from tvm_conformer.targets import DeviceTarget, load_target


def _log(msg: str, quiet: bool) -> None:
    if not quiet:
        print(f"[compile] {msg}", file=sys.stderr, flush=True)


def database_info(path: str | Path | None) -> dict | None:
    if not path:
        return None
    d = Path(path)
    files = {n: sha256_file(d / n) for n in ("database_workload.json", "database_tuning_record.json")
             if (d / n).is_file()}
    if len(files) != 2:
        raise UserError(f"tuning database {d} lacks database_workload.json/database_tuning_record.json")
    records = sum(1 for _ in open(d / "database_tuning_record.json"))
    return {"path": str(d), "records": records, "sha256": files}


def import_for_pipeline(model, frontend: str, opts: PipelineOptions):  # noqa: ANN001, ANN201
    """(IRModule, weights) of the step as `compile` imports it for `opts` (tuning too);
    `model`: a ModelSource or a ConformerASR."""
    if not isinstance(model, ModelSource):
        from tvm_conformer.frontend import import_step

        return import_step(model, frontend, bind=opts.precision == "fp16")
    # fp16 converts the weights at compile time, so they are bound into the library as constants;
    # int8 quantizes them in the weight transform lifted out of the step (weights.npz holds int8)
    return model.import_step(frontend, bind=opts.precision == "fp16")


def run_weight_transform(func, weights: list):  # noqa: ANN001, ANN201 - relax.Function, arrays
    """The weights `main` takes after the pipeline lifted `func` (`main_transform_params`) out
    of it: `func` compiled for this machine and run once on `weights` (numpy arrays)."""
    import numpy as np
    import tvm
    from tvm import relax

    mod = tvm.IRModule({"main": func.with_attr("global_symbol", "main")})
    host = tvm.target.Target({"kind": "llvm"})
    with host:  # reshapes and transposes run once: untuned kernels will do
        ex = tvm.compile(mod, target=host)
    vm = relax.VirtualMachine(ex, tvm.cpu())
    out = vm["main"]([tvm.runtime.tensor(w) for w in weights])
    return [np.ascontiguousarray(t.numpy()) for t in out]


def _int8_scheme(target) -> dict:  # noqa: ANN001 - tvm.target.Target
    from tvm_conformer.passes.quantize_int8 import int8_scheme

    return int8_scheme(target).to_dict()


def compile_artifact(
    out_dir: str | Path,
    target: str | DeviceTarget = "host",
    model: str | Path = DEFAULT_CHECKPOINT,
    frontend: str = "torch",
    opts: PipelineOptions | None = None,
    dump_ir: str | Path | None = None,
    quiet: bool = False,
    use_default_database: bool = True,
    tokens: str | Path | None = None,
) -> dict:
    """Builds the streaming step for `target` into `out_dir`; returns the manifest. `model`: a
    checkpoint, or an ONNX file of the streaming-CTC contract (`tokens`: its tokens.txt).

    Without `opts.database`, the target's `tuning_logs/<target>` database is applied when its
    manifest matches (`use_default_database=False`: never)."""
    import tvm

    from tvm_conformer.compiler.compat import required_cpu_features
    from tvm_conformer.compiler.database import (
        DatabaseMismatchWarning,
        check_database,
        default_database,
        thread_mismatch,
    )
    from tvm_conformer.compiler.database import read_manifest as read_db_manifest
    from tvm_conformer.compiler.link import export, require_linker
    from tvm_conformer.compiler.pipeline import tvm_conformer_pipeline
    from tvm_conformer.compiler.roofline import count_work

    device = load_target(target) if isinstance(target, str) else target
    require_linker(device)  # before the compile it would waste
    opts = opts or PipelineOptions(family=device.family)
    opts = opts.with_default_threads(device.threads)  # built for the count it will run with
    if opts.family != device.family:
        raise UserError(f"pipeline family {opts.family!r} does not match target family {device.family!r}")
    if opts.database is not None:  # one line on a torn or crossed database, not TVM's error
        check_database(Path(opts.database))
        db_manifest = read_db_manifest(Path(opts.database))
        why = db_manifest and thread_mismatch(db_manifest, opts)
        if why:
            warnings.warn(f"not applying the tuning database {opts.database}: {why}; tune one "
                          f"with `tvm-conformer tune --threads {opts.threads}`",
                          DatabaseMismatchWarning, stacklevel=2)
            opts = dataclasses.replace(opts, database=None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    src = open_model(model, tokens)
    frontend = src.frontend(frontend)
    default_db = None
    if opts.database is None and use_default_database:
        default_db = default_database(device, src.config_hash, opts)
        if default_db:
            opts = dataclasses.replace(opts, database=default_db)
            _log(f"applying the tuned database {default_db} (its manifest matches this model "
                 "config, pipeline and TVM version)", quiet)
    _log(f"importing the streaming step of {model} through {frontend}", quiet)
    mod, weights = import_for_pipeline(src, frontend, opts)
    stats: dict = {}

    def observe(phase: str, m: tvm.IRModule) -> None:
        if phase == "fused":  # what a step computes and moves, for `estimate`
            stats["work"] = count_work(m)
            stats["fused"] = m  # the unscheduled kernels: a GPU build's launch records cite them
        if phase == "scheduled":
            stats["kernels"] = kernel_names(m)
            stats["unscheduled"] = unscheduled_kernels(m)
        if phase == "lowered":
            stats["calls"] = kernel_calls(m)

    lifted: list = []  # the weight transform the pipeline takes out of `main`
    pipeline = tvm_conformer_pipeline(opts, dump_ir, observe, lift_weights=lifted.append)
    tvm_target = device.tvm()
    _log(f"compiling for {device.name} ({tvm_target.kind.name}, {opts.precision}, "
         f"passes: {','.join(opts.passes) or 'none'}, database: {opts.database or 'none'})", quiet)
    recorder = KernelRecorder()  # GPU builds: the kernels' launches, for `verify/opencl_run`
    instruments = [recorder] if device.family == "mali" else []
    with tvm_target, tvm.transform.PassContext(instruments=instruments):
        ex = tvm.compile(mod, target=tvm_target, relax_pipeline=pipeline)
    export(ex, device, out / LIB)
    files = [LIB, WEIGHTS]
    if recorder.module is not None:
        records = launch_records(recorder.module, stats["fused"])
        (out / KERNELS_JSON).write_text(json.dumps(records, indent=1))
        files += [OPENCL_SOURCE, KERNELS_JSON]
    n_model_weights = len(weights)
    if lifted:
        weights = run_weight_transform(lifted[0], weights)
        _log(f"weights transformed once here (transposes, reshapes): {n_model_weights} model "
             f"arrays -> {len(weights)} that `main` takes", quiet)
    save_weights(out / WEIGHTS, weights)
    seconds = time.time() - t0
    n, un = len(stats.get("kernels", [])), stats.get("unscheduled", [])
    _log(f"{n} kernels ({stats.get('calls')} launches per step), {n - len(un)} scheduled; "
         f"without a schedule: {', '.join(un) or 'none'}", quiet)
    db_info = database_info(opts.database)
    manifest = {
        "model": src.manifest_entry(),
        "target": {"name": device.name, "family": device.family, "tvm": json.loads(str(tvm_target)),
                   "host": json.loads(str(tvm_target.host)) if tvm_target.host else None,
                   "elf_machine": device.elf_machine, "threads": opts.threads,
                   "max_work_group_size": device.max_work_group_size,
                   "local_mem_bytes": device.local_mem_bytes,
                   # what its code needs of the CPU (checked at load against /proc/cpuinfo)
                   "cpu_features": required_cpu_features(tvm_target.host or tvm_target)},
        "frontend": frontend,
        "pipeline": opts.to_dict(),
        **({"int8": _int8_scheme(tvm_target)} if opts.precision == "int8" else {}),
        "database": db_info and {**db_info, "default": default_db is not None},
        "kernels": {"count": n, "calls_per_step": stats.get("calls"), "unscheduled": un},
        "work": dataclasses.asdict(stats["work"]),
        "io": {"inputs": list(src.inputs), "outputs": list(src.outputs),
               "weights": len(weights), "model_weights": n_model_weights,
               "weights_transformed": bool(lifted)},
        "tvm_version": tvm.__version__,
        "built_on": {"machine": platform.machine(), "python": platform.python_version()},
        "compile_seconds": round(seconds, 2),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_manifest(out, manifest, files)
    _log(f"wrote {out} in {seconds:.1f} s", quiet)
    return manifest
