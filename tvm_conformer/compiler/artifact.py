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
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tvm_conformer.errors import UserError

FORMAT = 1
MANIFEST = "manifest.json"
LIB = "lib.so"
WEIGHTS = "weights.npz"


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def compiler_sources_hash() -> str:
    """Hash of the project's compiler code (import, passes, pipeline, rules): a cached build
    is stale when any of it changes."""
    pkg = Path(__file__).resolve().parent.parent
    files = [f for d in ("frontend", "passes", "compiler", "targets") for f in sorted((pkg / d).glob("*.py"))]
    files += sorted((pkg.parent / "schedules").glob("*.py"))
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.parent.name}/{f.name}:".encode() + f.read_bytes())
    return h.hexdigest()[:12]


def save_weights(path: Path, weights: list[np.ndarray]) -> None:
    np.savez(path, **{f"w{i:04d}": w for i, w in enumerate(weights)})


def load_weights(path: Path) -> list[np.ndarray]:
    with np.load(path) as z:
        return [z[k] for k in sorted(z.files)]


def write_manifest(out_dir: Path, manifest: dict, files: Sequence[str] = (LIB, WEIGHTS)) -> None:
    """Writes `manifest` with the sha256 of each of `files` (the library and weights, and
    for GPU builds the kernels' source and launch records)."""
    manifest = dict(manifest, format=FORMAT)
    manifest["files"] = {name: sha256_file(out_dir / name) for name in files}
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))


def read_manifest(art_dir: str | Path, verify: bool = True) -> dict:
    """The manifest; with `verify`, checks the library and weights against their hashes."""
    art = Path(art_dir)
    path = art / MANIFEST
    if not path.is_file():
        raise UserError(f"{art} is not an artifact (no {MANIFEST}); build one with `tvm-conformer compile`")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise UserError(f"{path} is corrupted (not JSON); rebuild with `tvm-conformer compile`") from None
    if manifest.get("format") != FORMAT:
        raise UserError(
            f"{art}: artifact format {manifest.get('format')} is not {FORMAT}; rebuild it with this version"
        )
    if verify:
        for name, digest in manifest.get("files", {}).items():
            f = art / name
            if not f.is_file():
                raise UserError(f"{art}: {name} is missing; rebuild with `tvm-conformer compile`")
            if sha256_file(f) != digest:
                raise UserError(
                    f"{art}: {name} does not match its manifest hash (corrupted or replaced); "
                    "rebuild with `tvm-conformer compile`"
                )
    return manifest
