"""`tvm-conformer compile`, `targets` and `estimate` through the CLI: builds, reports, checks,
and the one-line errors for what a user can get wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tvm_conformer.cli import main
from tvm_conformer.paths import TARGETS_DIR


def _device_file(tmp_path: Path, text: str, name: str = "board") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


VALID = (TARGETS_DIR / "rpi4.toml").read_text()


def _error(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def test_targets_lists_every_device_with_its_toolchain(capsys: pytest.CaptureFixture) -> None:
    assert main(["targets"]) == 0
    out = capsys.readouterr().out
    header, *rows = out.strip().splitlines()
    assert header.split()[:3] == ["name", "family", "tvm"]
    assert {r.split()[0] for r in rows} == {p.stem for p in TARGETS_DIR.glob("*.toml")}
    rpi4 = next(r for r in rows if r.startswith("rpi4 "))
    assert "aarch64-linux-gnu-g++" in rpi4 and "found" in rpi4 and "qemu-cortex-a72" in rpi4


def test_unknown_target_names_the_known_ones(capsys: pytest.CaptureFixture) -> None:
    err = _error(capsys, ["compile", "--target", "nosuch"])
    assert "unknown target 'nosuch'" in err and "rpi4" in err


def test_malformed_toml_says_where(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    path = _device_file(tmp_path, VALID.replace('family = "cpu"', "family = cpu"))
    err = _error(capsys, ["compile", "--target", str(path)])
    assert str(path) in err and "not valid TOML" in err and "line" in err


def test_unknown_field_is_named_with_the_allowed_ones(capsys: pytest.CaptureFixture,
                                                      tmp_path: Path) -> None:
    path = _device_file(tmp_path, VALID.replace("name = \"rpi4\"", "name = \"board\"")
                        + "\nclock_mhz = 1500\n")
    err = _error(capsys, ["compile", "--target", str(path)])
    assert "unknown field 'clock_mhz'" in err and "clock_ghz" in err


@pytest.mark.parametrize("line, field", [("cores = \"four\"", "cores"), ("cores = true", "cores"),
                                         ("clock_ghz = \"1.5\"", "clock_ghz"),
                                         ("cc_options = \"-O2\"", "cc_options"),
                                         ("tvm_target = \"llvm\"", "tvm_target")])
def test_wrong_type_names_the_field(capsys: pytest.CaptureFixture, tmp_path: Path, line: str,
                                    field: str) -> None:
    key = line.split(" = ")[0]
    text = "\n".join(x for x in VALID.replace("name = \"rpi4\"", "name = \"board\"").splitlines()
                     if not x.startswith(f"{key} ")) + f"\n{line}\n"
    err = _error(capsys, ["compile", "--target", str(_device_file(tmp_path, text))])
    assert f"field {field!r} must be" in err


def test_missing_cross_compiler_names_the_apt_package(capsys: pytest.CaptureFixture,
                                                      tmp_path: Path, tiny_checkpoint: Path) -> None:
    text = VALID.replace("name = \"rpi4\"", "name = \"board\"").replace(
        "aarch64-linux-gnu-g++", "sparc64-linux-gnu-g++")
    err = _error(capsys, ["compile", "--target", str(_device_file(tmp_path, text)),
                          "--model", str(tiny_checkpoint), "-o", str(tmp_path / "art")])
    assert "'sparc64-linux-gnu-g++'" in err and "apt-get install g++-sparc64-linux-gnu" in err
    assert not (tmp_path / "art" / "lib.so").exists()


def test_unknown_pass_and_precision_are_refused(capsys: pytest.CaptureFixture) -> None:
    assert "unknown graph pass 'fold'" in _error(capsys, ["compile", "--passes", "layout,fold"])
    assert "unknown precision 'int4'" in _error(capsys, ["compile", "--precision", "int4"])
    assert "--threads" in _error(capsys, ["compile", "--threads", "-1"])


@pytest.mark.slow
def test_one_thread_build_has_no_parallel_loop_and_says_so(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """`--threads 1`: every kernel serial (the library never calls TVM's thread pool), and
    the manifest records the thread count the runtime then uses."""
    from tvm_conformer.compiler.artifact import LIB

    art = tmp_path / "one"
    assert main(["compile", "--model", str(tiny_checkpoint), "-o", str(art), "--threads", "1",
                 "--parallel-min-flops", "0"]) == 0
    manifest = json.loads((art / "manifest.json").read_text())
    assert manifest["target"]["threads"] == manifest["pipeline"]["threads"] == 1
    assert b"TVMBackendParallelLaunch" not in (art / LIB).read_bytes()
    # the same model for 2 threads with the rules' own choice (no threshold) does use the pool
    par = tmp_path / "par"
    assert main(["compile", "--model", str(tiny_checkpoint), "-o", str(par), "--threads", "2",
                 "--parallel-min-flops", "0"]) == 0
    assert json.loads((par / "manifest.json").read_text())["target"]["threads"] == 2
    assert b"TVMBackendParallelLaunch" in (par / LIB).read_bytes()


@pytest.mark.slow
def test_compile_reports_checks_and_estimates(capsys: pytest.CaptureFixture, tmp_path: Path,
                                              tiny_checkpoint: Path) -> None:
    art = tmp_path / "rpi4"
    assert main(["compile", "--target", "rpi4", "--model", str(tiny_checkpoint), "-o", str(art),
                 "--no-passes", "--report", "--check"]) == 0
    out = capsys.readouterr().out
    manifest = json.loads((art / "manifest.json").read_text())
    assert manifest["pipeline"]["passes"] == [] and manifest["target"]["name"] == "rpi4"
    assert f"{manifest['kernels']['count']} kernels" in out
    assert "neon " in out and "FAIL" not in out
    assert main(["estimate", "--artifact", str(art)]) == 0
    out = capsys.readouterr().out
    assert "estimate (roofline lower bound), not a measurement" in out
    saved = json.loads((art / "estimate.json").read_text())
    assert saved["target"] == "rpi4" and saved["macs"] == manifest["work"]["macs"] > 0
    assert saved["rtf_lower_bound"] > 0
    # counted from the checkpoint with the pipeline `compile` runs by default
    out = tmp_path / "estimate.json"
    assert main(["estimate", "--target", "rpi4", "--model", str(tiny_checkpoint),
                 "--json", str(out)]) == 0
    assert json.loads(out.read_text())["macs"] == manifest["work"]["macs"]


@pytest.mark.slow
def test_several_builds_are_summarized_and_go_on_after_a_failure(
    capsys: pytest.CaptureFixture, tmp_path: Path, tiny_checkpoint: Path
) -> None:
    broken = _device_file(tmp_path, VALID.replace("name = \"rpi4\"", "name = \"board\"").replace(
        "aarch64-linux-gnu-g++", "sparc64-linux-gnu-g++"))
    # side by side in two processes, as make cross builds (a failure in one is still a row)
    code = main(["compile", "--target", f"{broken},armv7-a7", "--model", str(tiny_checkpoint),
                 "--no-passes", "--check", "-o", str(tmp_path / "all"), "--jobs", "2"])
    assert code == 1
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert "apt-get install g++-sparc64-linux-gnu" in rows["board-fp32"]
    assert rows["armv7-a7-fp32"].split()[1] == "ok" and "neon:ok" in rows["armv7-a7-fp32"]
    assert (tmp_path / "all" / "armv7-a7-fp32" / "lib.so").is_file()


def test_jobs_must_be_a_positive_count(capsys: pytest.CaptureFixture) -> None:
    err = _error(capsys, ["compile", "--target", "rpi4,armv7-a7", "--jobs", "0"])
    assert "--jobs takes a count >= 1" in err


def test_pass_selection_defaults_to_none_like_the_api() -> None:
    """The CLI builds what `compile_artifact` and `transcribe` build unless told otherwise."""
    import argparse

    from tvm_conformer.cli.compile import _passes
    from tvm_conformer.compiler.pipeline import GRAPH_PASSES, PipelineOptions

    def parsed(passes: str | None, no_passes: bool = False) -> tuple[str, ...]:
        return _passes(argparse.Namespace(passes=passes, no_passes=no_passes))

    assert parsed(None) == () == PipelineOptions().passes
    assert parsed(None, no_passes=True) == ()
    assert parsed("all") == GRAPH_PASSES
    assert parsed("fuse,layout") == ("fuse", "layout")
