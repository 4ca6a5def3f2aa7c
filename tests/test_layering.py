"""The stages import one way only: each module of `tvm_conformer` imports only stages listed
before it in `ORDER` (docs/ARCHITECTURE.md draws the same order)."""

from __future__ import annotations

import ast
from pathlib import Path

import tvm_conformer

PACKAGE = Path(tvm_conformer.__file__).parent

# lower stages first; a stage may import any stage before it, never one after it
ORDER = [
    "__init__", "errors", "paths", "threads",
    "audio", "model", "data", "decode", "targets",
    "frontend", "passes", "train",
    "compiler", "runtime", "verify", "evaluate", "study_fp16", "rpc", "tune",
    "bench", "cli", "__main__",
]


def _stage(path: Path) -> str:
    rel = path.relative_to(PACKAGE).parts
    return rel[0] if len(rel) > 1 else rel[0].removesuffix(".py")


def _imported_stages(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "tvm_conformer":
                found.update(a.name for a in node.names)
            elif node.module.startswith("tvm_conformer."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names
                         if a.name.startswith("tvm_conformer."))
    return found


def stage_imports() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for f in sorted(PACKAGE.rglob("*.py")):
        src = _stage(f)
        deps = _imported_stages(ast.parse(f.read_text(), str(f))) - {src, "__version__"}
        edges.setdefault(src, set()).update(deps)
    return edges


def test_every_stage_is_placed():
    assert set(stage_imports()) <= set(ORDER), set(stage_imports()) - set(ORDER)


def test_stages_import_downwards_only():
    rank = {s: i for i, s in enumerate(ORDER)}
    upward = sorted((src, dst) for src, deps in stage_imports().items() for dst in deps
                    if dst in rank and rank[dst] >= rank[src])
    assert not upward, f"stages importing later stages (two-way dependencies): {upward}"


def test_relative_imports_are_not_used():
    """Relative imports would hide from the check above."""
    offenders = [str(f.relative_to(PACKAGE)) for f in PACKAGE.rglob("*.py")
                 if any(isinstance(n, ast.ImportFrom) and n.level > 0
                        for n in ast.walk(ast.parse(f.read_text())))]
    assert not offenders, offenders


def test_the_check_sees_an_upward_import(tmp_path):
    """The check is not vacuous: a compiler module importing the runtime is reported."""
    tree = ast.parse("from tvm_conformer.runtime.tvm_backend import TVMBackend\n"
                     "import tvm_conformer.bench.harness\n")
    assert _imported_stages(tree) == {"runtime", "bench"}


def test_schedules_import_no_stage_above_the_compiler():
    """`schedules/*.py` are loaded by the compiler's rules: they may use the compiler's helpers
    and anything below, never the tuner (which itself builds through the compiler)."""
    from tvm_conformer.paths import SCHEDULES_DIR

    rank = {s: i for i, s in enumerate(ORDER)}
    upward = sorted((f.name, dst) for f in SCHEDULES_DIR.glob("*.py")
                    for dst in _imported_stages(ast.parse(f.read_text()))
                    if rank.get(dst, 0) > rank["compiler"])
    assert not upward, upward
