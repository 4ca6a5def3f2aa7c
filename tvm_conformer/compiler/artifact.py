"""The artifact: a directory with the compiled library, the weights and a manifest.

    ARTIFACT/manifest.json   model config + hash, target, TVM version, pipeline options,
                             tuning database, kernel statistics, sha256 of every file
    ARTIFACT/lib.so          the VM executable and its kernels, linked for the target
    ARTIFACT/weights.npz     the weights, in the order `main` takes them after the inputs,
                             already transformed: the compiler lifts what depends on weights
                             alone (transposes, reshapes) out of `main` and runs it once

One library serves any weights file of the same model config (transformed the same way).
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tvm_conformer.errors import UserError

FORMAT = 2  # 2: the schema is checked, target.cpu_features
MANIFEST = "manifest.json"
LIB = "lib.so"
WEIGHTS = "weights.npz"


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# What a build reads besides its inputs: the model code (`forward_chunk` is what gets compiled),
# the import, the passes, the compiler and its rules, the target registry; schedules/ is loaded
# by the rules. (tune/ is not: nothing in compiler/ or schedules/ imports it, a test checks.)
BUILD_SOURCES = ("model", "frontend", "passes", "compiler", "targets")


def compiler_sources_hash() -> str:
    """Hash of the project's code a build runs: a cached build is stale when any of it changes."""
    pkg = Path(__file__).resolve().parent.parent
    files = [f for d in BUILD_SOURCES for f in sorted((pkg / d).rglob("*.py"))]
    files += sorted((pkg.parent / "schedules").rglob("*.py"))
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.relative_to(pkg.parent)}:".encode() + f.read_bytes())
    return h.hexdigest()[:12]


def build_key(checkpoint: str | Path, device, options: dict, database: str | Path | None) -> str:  # noqa: ANN001
    """A cache key covering everything a build depends on: the checkpoint, the project's build
    code, the target file, this CPU (model and flags: `mcpu = "host"` means this one), TVM's,
    tvm-ffi's and the project's versions, the pipeline options and the database's contents."""
    import tvm
    import tvm_ffi

    from tvm_conformer import __version__
    from tvm_conformer.compiler.compat import host_cpu_identity

    db = Path(database) if database else None
    inputs = {
        "checkpoint": sha256_file(checkpoint), "sources": compiler_sources_hash(),
        "target": sha256_file(device.path) if device.path else repr(device),
        "cpu": host_cpu_identity(), "tvm": tvm.__version__, "tvm_ffi": tvm_ffi.__version__,
        "version": __version__, "options": options,
        "database": db and {f.name: sha256_file(f) for f in sorted(db.glob("*.json"))},
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:16]


def save_weights(path: Path, weights: list[np.ndarray]) -> None:
    np.savez(path, **{f"w{i:04d}": w for i, w in enumerate(weights)})


def load_weights(path: Path) -> list[np.ndarray]:
    """The arrays of a weights file; never unpickles (object arrays are refused, one line)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            weights = [z[k] for k in sorted(z.files)]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise UserError(f"{path} is not a weights file of plain arrays ({str(exc).splitlines()[0]}); "
                        "rebuild the artifact with `tvm-conformer compile`") from None
    bad = next((w.dtype for w in weights if w.dtype.kind not in "biuf"), None)
    if bad is not None:
        raise UserError(f"{path} holds an array of dtype {bad}, not numbers; rebuild the artifact "
                        "with `tvm-conformer compile`")
    return weights


# The manifest's schema: what the loaders read, and its type (a tuple: any of these)
_OBJ, _STR, _INT, _OPT_STR, _OPT_OBJ = dict, str, int, (str, type(None)), (dict, type(None))
SCHEMA: dict = {
    "format": _INT,
    "model": {"config_hash": _STR, "checkpoint": _STR, "checkpoint_sha256": _STR},
    "target": {"name": _STR, "family": _STR, "tvm": _OBJ, "host": _OPT_OBJ,
               "elf_machine": _OPT_STR, "threads": _INT, "cpu_features": list},
    "frontend": _STR,
    "pipeline": _OBJ,
    "io": {"weights": _INT},
    "tvm_version": _STR,
    "built_on": {"machine": _STR},
    "files": _OBJ,
}
_TYPE_NAMES = {dict: "an object", str: "a string", int: "an integer", list: "a list"}
ARTIFACT_FILES = (LIB, WEIGHTS)  # exactly the files the manifest must hash
GPU_FILES = ("kernels.cl", "kernels.json")  # and for OpenCL builds (link.OPENCL_SOURCE, kernels.KERNELS_JSON)


def _rebuild(art: Path, problem: str) -> UserError:
    return UserError(f"{art / MANIFEST}: {problem}; rebuild with `tvm-conformer compile`")


def _check_schema(art: Path, value: object, schema: dict, where: str = "") -> None:
    for key, kind in schema.items():
        name = f"{where}{key}"
        if key not in value:
            raise _rebuild(art, f"{name} is missing")
        got = value[key]
        if isinstance(kind, dict):
            if not isinstance(got, dict):
                raise _rebuild(art, f"{name} must be an object, not {type(got).__name__}")
            _check_schema(art, got, kind, f"{name}.")
        elif not isinstance(got, kind) or (isinstance(got, bool) and kind is int):
            want = " or ".join(_TYPE_NAMES.get(k, "null") for k in (kind if isinstance(kind, tuple) else (kind,)))
            raise _rebuild(art, f"{name} must be {want}, not {type(got).__name__} {got!r:.40}")
    if where:
        return
    if not all(isinstance(f, str) for f in value["target"]["cpu_features"]):
        raise _rebuild(art, "target.cpu_features must be a list of strings")
    # our checkpoints have a model config, a contract model (ONNX) its contract
    model_key = "contract" if value["model"].get("kind") == "onnx-contract" else "config"
    _check_schema(art, value["model"], {model_key: _OBJ}, "model.")


def _check_files(art: Path, files: dict, family: str) -> None:
    for name, digest in files.items():
        p = Path(name)
        if p.is_absolute() or ".." in p.parts or len(p.parts) != 1:
            raise _rebuild(art, f"file name {name!r} is not a file of the artifact directory")
        if not (isinstance(digest, str) and len(digest) == 64):
            raise _rebuild(art, f"files.{name} is not a sha256 digest")
    required = [*ARTIFACT_FILES, *(GPU_FILES if family == "mali" else ())]
    if sorted(files) != sorted(required):
        raise _rebuild(art, f"files lists {sorted(files)}, a {family} artifact has exactly "
                       f"{required} (each with its hash)")


def write_manifest(out_dir: Path, manifest: dict, files: Sequence[str] = ARTIFACT_FILES) -> None:
    """Writes `manifest` with the sha256 of each of `files` (the library and weights, and
    for GPU builds the kernels' source and launch records)."""
    manifest = dict(manifest, format=FORMAT)
    manifest["files"] = {name: sha256_file(out_dir / name) for name in files}
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))


def read_manifest(art_dir: str | Path, verify: bool = True) -> dict:
    """The manifest, its schema checked; with `verify`, checks that it hashes exactly the
    library and the weights, and that they match their hashes."""
    art = Path(art_dir)
    path = art / MANIFEST
    if not path.is_file():
        raise UserError(f"{art} is not an artifact (no {MANIFEST}); build one with `tvm-conformer compile`")
    try:
        manifest = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise _rebuild(art, "corrupted (not UTF-8 text)") from None
    except json.JSONDecodeError:
        raise _rebuild(art, "corrupted (not JSON)") from None
    if not isinstance(manifest, dict):
        raise _rebuild(art, f"corrupted (not a JSON object but a {type(manifest).__name__})")
    if manifest.get("format") != FORMAT:
        raise UserError(
            f"{art}: artifact format {manifest.get('format')!r:.20} is not {FORMAT}; rebuild it with this version"
        )
    _check_schema(art, manifest, SCHEMA)
    if verify:
        _check_files(art, manifest["files"], manifest["target"]["family"])
        for name, digest in manifest["files"].items():
            f = art / name
            if not f.is_file():
                raise UserError(f"{art}: {name} is missing; rebuild with `tvm-conformer compile`")
            if sha256_file(f) != digest:
                raise UserError(
                    f"{art}: {name} does not match its manifest hash (corrupted or replaced); "
                    "rebuild with `tvm-conformer compile`"
                )
    return manifest
