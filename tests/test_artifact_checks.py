"""The artifact's manifest and library are checked before anything runs (issue 18, items 2-4):
exactly its files and their hashes, the manifest's own schema, the library's real ELF header,
the CPU features the build needs, and a cache key that covers everything the build reads.
Synthetic artifacts (a bare ELF header as lib.so): nothing here compiles."""

from __future__ import annotations

import ast
import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from tvm_conformer.compiler import artifact
from tvm_conformer.compiler.artifact import LIB, MANIFEST, WEIGHTS, read_manifest, write_manifest
from tvm_conformer.errors import UserError
from tvm_conformer.runtime.tvm_backend import TVMBackend

EM_X86_64, EM_AARCH64, EM_ARM = 62, 183, 40


def fake_library(path: Path, machine: int = EM_X86_64, bits: int = 64) -> None:
    """An ELF header (and nothing a loader could run): e_ident, e_type ET_DYN, e_machine."""
    ident = b"\x7fELF" + bytes([2 if bits == 64 else 1, 1, 1]) + bytes(9)
    path.write_bytes(ident + struct.pack("<HHI", 3, machine, 1) + bytes(64))


def synthetic_manifest(**target) -> dict:
    return {
        "model": {"config": {}, "config_hash": "0" * 12, "checkpoint": "m.pt",
                  "checkpoint_sha256": "0" * 64, "valid_wer": None},
        "target": {"name": "host", "family": "cpu", "tvm": {"kind": "llvm", "mcpu": "znver3"},
                   "host": None, "elf_machine": "Advanced Micro Devices X86-64", "threads": 1,
                   "cpu_features": ["avx2", "fma"], **target},
        "frontend": "torch", "pipeline": {"precision": "fp32"}, "database": None,
        "io": {"weights": 1}, "tvm_version": "0.27.0", "built_on": {"machine": "x86_64"},
    }


@pytest.fixture
def art(tmp_path: Path) -> Path:
    out = tmp_path / "art"
    out.mkdir()
    fake_library(out / LIB)
    np.savez(out / WEIGHTS, w0000=np.ones(3, np.float32))
    write_manifest(out, synthetic_manifest())
    return out


def _edit(art: Path, edit) -> None:  # noqa: ANN001
    m = json.loads((art / MANIFEST).read_text())
    edit(m)
    (art / MANIFEST).write_text(json.dumps(m))


def test_the_synthetic_artifact_passes(art):
    assert read_manifest(art)["target"]["name"] == "host"


@pytest.mark.parametrize("files", [{}, {LIB: "x"}, "not a dict"])
def test_a_manifest_cannot_skip_its_own_verification(art, files):
    """Item 2: `"files": {}` (or a missing entry) let a replaced lib.so load unverified."""
    (art / WEIGHTS).write_bytes(b"zeroed")  # replaced after the build
    good = json.loads((art / MANIFEST).read_text())["files"]
    _edit(art, lambda m: m.update(files=files if files != {LIB: "x"} else {LIB: good[LIB]}))
    with pytest.raises(UserError, match="files"):
        read_manifest(art)


@pytest.mark.parametrize("name", ["/etc/passwd", "../lib.so", "sub/../../x"])
def test_file_names_outside_the_artifact_are_refused(art, name):
    digest = artifact.sha256_file(art / LIB)
    _edit(art, lambda m: m["files"].update({name: digest}))
    with pytest.raises(UserError, match="file name"):
        read_manifest(art)


@pytest.mark.parametrize("edit, match", [
    (lambda m: m["target"].pop("threads"), "target.threads is missing"),
    (lambda m: m["target"].update(threads="2"), "target.threads must be an integer"),
    (lambda m: m["io"].update(weights=1.5), "io.weights must be an integer"),
    (lambda m: m.update(target=["host"]), "target must be an object"),
    (lambda m: m["model"].pop("config"), "model.config is missing"),
    (lambda m: m["target"].update(cpu_features="avx2"), "target.cpu_features must be a list"),
])
def test_the_manifest_schema_is_checked_one_line_each(art, edit, match):
    _edit(art, edit)
    with pytest.raises(UserError, match=match) as exc:
        read_manifest(art)
    assert "\n" not in str(exc.value) and "rebuild" in str(exc.value)


def test_a_manifest_that_is_a_list_or_not_utf8_is_one_line(art):
    (art / MANIFEST).write_text("[1, 2]")
    with pytest.raises(UserError, match="not a JSON object"):
        read_manifest(art)
    (art / MANIFEST).write_bytes(b'{"format": "\xff\xfe"}')
    with pytest.raises(UserError, match="not UTF-8"):
        read_manifest(art)


@pytest.mark.parametrize("machine, bits, says", [(EM_AARCH64, 64, "AArch64"), (EM_ARM, 32, "ARM"),
                                                 (EM_X86_64, 32, "ELF32")])
def test_the_loader_reads_the_library_not_the_manifest(art, machine, bits, says):
    """Item 3: the manifest says host x86_64; the library is for another machine (or class)."""
    fake_library(art / LIB, machine, bits)
    _edit(art, lambda m: m["files"].update({LIB: artifact.sha256_file(art / LIB)}))
    with pytest.raises(UserError, match=says) as exc:
        TVMBackend.load(art)
    assert "lib.so" in str(exc.value) and "\n" not in str(exc.value)


def test_a_library_that_is_not_elf_is_refused(art):
    (art / LIB).write_bytes(b"MZ not an ELF file at all")
    _edit(art, lambda m: m["files"].update({LIB: artifact.sha256_file(art / LIB)}))
    with pytest.raises(UserError, match="not an ELF"):
        TVMBackend.load(art)


def test_elf_header_is_read_with_struct(tmp_path):
    from tvm_conformer.compiler.compat import read_elf_header

    lib = tmp_path / "lib.so"
    fake_library(lib, EM_AARCH64, 64)
    h = read_elf_header(lib)
    assert (h.arch, h.bits, h.name) == ("aarch64", 64, "AArch64")
    fake_library(lib, 164, 32)
    assert read_elf_header(lib).arch == "hexagon"


def test_a_build_for_missing_cpu_features_is_refused(art, tmp_path, monkeypatch):
    """Item 4: an AVX-512 build in a shared cache, loaded on an x86 without AVX-512 (SIGILL)."""
    from tvm_conformer.compiler import compat

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse sse2 avx avx2 fma\n\n")
    monkeypatch.setattr(compat, "CPUINFO", cpuinfo)
    monkeypatch.setattr(compat, "host_arch", lambda: "x86_64")
    _edit(art, lambda m: m["target"].update(cpu_features=["avx2", "avx512f", "avx512bw", "fma"]))
    with pytest.raises(UserError, match="avx512f") as exc:
        TVMBackend.load(art)
    assert "recompile with --target host on this machine" in str(exc.value)
    assert "\n" not in str(exc.value)


def test_cpu_features_are_mapped_to_cpuinfo_flags():
    from tvm_conformer.compiler.compat import missing_cpu_features

    flags = {"sse4_1", "sse4_2", "pclmulqdq", "avx2", "bmi1"}
    assert missing_cpu_features(["sse4.1", "sse4.2", "pclmul", "bmi", "avx2"], flags) == []
    assert missing_cpu_features(["avx512f", "avx2", "fast-15bytenop"], flags) == ["avx512f"]
    # aarch64 names its features differently
    assert missing_cpu_features(["neon", "fullfp16"], {"asimd"}) == ["fullfp16"]


def test_compile_records_the_cpu_features_the_target_needs():
    import tvm

    from tvm_conformer.compiler.compat import required_cpu_features

    znver4 = required_cpu_features(tvm.target.Target({"kind": "llvm", "mcpu": "znver4"}))
    znver3 = required_cpu_features(tvm.target.Target({"kind": "llvm", "mcpu": "znver3"}))
    assert "avx512f" in znver4 and "avx512f" not in znver3 and "avx2" in znver3
    a76 = required_cpu_features(tvm.target.Target(
        {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a76", "mattr": ["+neon"]}))
    assert "neon" in a76 and "avx2" not in a76


def _copy_sources(tmp_path: Path) -> Path:
    """A copy of the package and schedules/ whose files a test may change."""
    pkg = Path(artifact.__file__).resolve().parent.parent
    root = tmp_path / "src"
    shutil.copytree(pkg, root / pkg.name, ignore=shutil.ignore_patterns("__pycache__", "assets"))
    shutil.copytree(pkg.parent / "schedules", root / "schedules",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return root / pkg.name


@pytest.mark.parametrize("changed", ["model/conformer.py", "frontend/export.py", "passes/fast_exp.py",
                                     "compiler/pipeline.py", "../schedules/cpu.py"])
def test_a_changed_source_file_invalidates_the_cached_build(tmp_path, monkeypatch, changed):
    """Item 4: model/ (whose forward_chunk is compiled) was not in the cache key."""
    copy = _copy_sources(tmp_path)
    monkeypatch.setattr(artifact, "__file__", str(copy / "compiler" / "artifact.py"))
    before = artifact.compiler_sources_hash()
    f = copy / changed
    f.write_text(f.read_text() + "\n# changed\n")
    assert artifact.compiler_sources_hash() != before


def test_the_compiler_and_schedules_do_not_import_the_tuner():
    """So tune/ need not be in the cache key: nothing the build runs comes from it."""
    pkg = Path(artifact.__file__).resolve().parent.parent
    for f in [*(pkg / "compiler").glob("*.py"), *(pkg.parent / "schedules").glob("*.py")]:
        for node in ast.walk(ast.parse(f.read_text())):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                     else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            assert not any(n.startswith("tvm_conformer.tune") for n in names), f


def test_the_build_key_covers_target_cpu_versions_options_and_database(tmp_path, monkeypatch):
    from tvm_conformer.compiler import compat
    from tvm_conformer.targets import load_target

    ckpt = tmp_path / "m.pt"
    ckpt.write_bytes(b"weights")
    db = tmp_path / "db"
    db.mkdir()
    for name in ("database_workload.json", "database_tuning_record.json"):
        (db / name).write_text("[0, 1]\n")
    host = load_target("host")
    base = artifact.build_key(ckpt, host, {"threads": 2}, db)
    assert artifact.build_key(ckpt, host, {"threads": 2}, db) == base
    assert artifact.build_key(ckpt, host, {"threads": 1}, db) != base
    assert artifact.build_key(ckpt, host, {"threads": 2}, None) != base
    (db / "database_tuning_record.json").write_text("[0, 2]\n")
    assert artifact.build_key(ckpt, host, {"threads": 2}, db) != base
    (db / "database_tuning_record.json").write_text("[0, 1]\n")
    target_file = tmp_path / "host.toml"
    target_file.write_text(Path(host.path).read_text() + "\n# edited\n")
    assert artifact.build_key(ckpt, load_target(str(target_file)), {"threads": 2}, db) != base
    monkeypatch.setattr(compat, "host_cpu_identity", lambda: "AMD EPYC 9B45: avx512f")
    assert artifact.build_key(ckpt, host, {"threads": 2}, db) != base


def test_verify_reads_the_elf_header_itself(tmp_path):
    """`verify`'s ELF check: machine and class from the file (an ELF32 x86-64 is not ELF64)."""
    from tvm_conformer.verify.checks import check_elf

    lib = tmp_path / "lib.so"
    fake_library(lib, EM_AARCH64, 64)
    assert check_elf(lib, "AArch64").ok is True and check_elf(lib, "ARM").ok is False
    fake_library(lib, EM_ARM, 32)
    assert check_elf(lib, "ARM").ok is True and check_elf(lib, "AArch64").ok is False
    fake_library(lib, EM_AARCH64, 32)
    assert check_elf(lib, "AArch64").ok is False
    assert check_elf(lib, None).ok is None
