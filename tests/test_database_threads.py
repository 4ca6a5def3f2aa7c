"""Records tuned for another thread count are not applied (issue 18, item 5): the committed
host database was tuned on 2 threads, and a `--threads 1` build took its parallel schedules
(measured: tuned 1.66 ms vs rules 1.43 ms per chunk at 1 thread)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import tvm

from tvm_conformer.compiler import database as tdb
from tvm_conformer.compiler.pipeline import PipelineOptions


def _log_dir(tmp: Path, threads: int) -> Path:
    log_dir = tmp / "host"
    log_dir.mkdir(parents=True)
    (log_dir / tdb.WORKLOADS).write_text("")
    (log_dir / tdb.RECORDS).write_text("")
    manifest = {"format": tdb.FORMAT, "model": {"config_hash": "abc"},
                "pipeline": tdb.kernel_options(PipelineOptions()),
                "tvm_version": tdb.tvm_version(), "threads": threads}
    (log_dir / tdb.MANIFEST).write_text(json.dumps(manifest))
    return log_dir


def test_a_database_tuned_on_other_threads_is_skipped_with_a_reason(tmp_path):
    log_dir = _log_dir(tmp_path, threads=2)
    two = PipelineOptions(threads=2)
    assert tdb.default_database("host", "abc", two, logs_dir=tmp_path) == str(log_dir)
    with pytest.warns(tdb.DatabaseMismatchWarning, match="tuned on 2 threads, this build runs on 1"):
        assert tdb.default_database("host", "abc", PipelineOptions(threads=1),
                                    logs_dir=tmp_path) is None


def _parallel_loops(mod: tvm.IRModule) -> list[str]:
    """The PrimFuncs with a ForKind.PARALLEL loop (TVMScript prints it `T.parallel(`; this TVM
    build exposes no TIR visitor to Python)."""
    return sorted(gv.name_hint for gv, func in mod.functions.items()
                  if isinstance(func, tvm.tirx.PrimFunc) and "T.parallel(" in func.script())


@pytest.mark.slow
def test_a_one_thread_build_of_the_shipped_model_has_no_parallel_loop(shipped_checkpoint,
                                                                        tmp_path, monkeypatch):
    """With the committed (2-thread) host database: the scheduled TIR of a `--threads 1`
    build has no ForKind.PARALLEL loop."""
    from tvm_conformer.compiler import pipeline
    from tvm_conformer.compiler.compile import compile_artifact

    assert tdb.read_manifest(tdb.log_dir_for("host"))["threads"] != 1  # the case at hand
    scheduled = []
    real = pipeline.tvm_conformer_pipeline

    def capturing(opts, dump_dir=None, observe=None, **kw):  # noqa: ANN001, ANN003, ANN202
        def both(phase, mod):  # noqa: ANN001, ANN202
            if phase == "scheduled":
                scheduled.append(mod)
            if observe is not None:
                observe(phase, mod)
        return real(opts, dump_dir, both, **kw)

    monkeypatch.setattr(pipeline, "tvm_conformer_pipeline", capturing)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        manifest = compile_artifact(tmp_path / "art", "host", shipped_checkpoint,
                                    opts=PipelineOptions(threads=1), quiet=True)
    assert len(scheduled) == 1 and _parallel_loops(scheduled[0]) == []
    assert manifest["target"]["threads"] == 1 and manifest["database"] is None
    assert any(issubclass(w.category, tdb.DatabaseMismatchWarning) and "threads" in str(w.message)
               for w in caught)


@pytest.mark.slow  # compiles the model
def test_an_explicit_database_tuned_on_other_threads_is_skipped(tmp_path, tiny_checkpoint):
    """`compile --database DIR --threads 1` with a 2-thread DIR: skipped, in one warning."""
    from tvm_conformer.compiler.compile import compile_artifact

    log_dir = _log_dir(tmp_path, threads=2)
    with pytest.warns(tdb.DatabaseMismatchWarning, match="tuned on 2 threads, this build runs on 1"):
        manifest = compile_artifact(tmp_path / "art", "host", tiny_checkpoint, quiet=True,
                                    opts=PipelineOptions(threads=1, database=str(log_dir)))
    assert manifest["database"] is None
