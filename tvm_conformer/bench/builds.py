"""What each benchmarked engine loads (ONNX files, TVM artifacts), built once into a cache
directory under a key of everything the build depends on; the checkpoint to benchmark."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from tvm_conformer.bench.engines import EngineSpec
from tvm_conformer.model import ConformerASR, ModelConfig, save_checkpoint
from tvm_conformer.paths import DEFAULT_CHECKPOINT, REPO_DIR

CACHE_DIR = REPO_DIR / "build" / "bench"


class Unavailable(Exception):
    """An engine variant that cannot be built here; the message goes into its row."""


class Builder:
    """Builds what each engine loads (ONNX files, TVM artifacts) once, cached under `cache`."""

    def __init__(self, cache: Path, checkpoint: Path, model: ConformerASR) -> None:
        from tvm_conformer.compiler.artifact import sha256_file

        self.checkpoint, self.model = checkpoint, model
        self.dir = cache / f"{model.cfg.hash()}-{sha256_file(checkpoint)[:12]}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.errors: dict[str, str] = {}  # failed builds (per thread count), not tried again

    def files(self, spec: EngineSpec) -> dict[str, str]:
        """{"checkpoint" | "onnx" | "artifact": path}; Unavailable when it cannot be built."""
        if spec.engine in ("torch", "torch.compile"):
            return {"checkpoint": str(self.checkpoint)}
        key = f"{spec.mode}-{spec.label}-{spec.threads}t"  # a build may fit one thread count only
        if key in self.errors:
            raise Unavailable(self.errors[key])
        try:
            return self._build(spec)
        except Unavailable as exc:
            self.errors[key] = str(exc)
            raise
        except Exception as exc:  # a failed build is a result, not a crash of the suite
            from tvm_conformer.bench.worker import one_line

            self.errors[key] = f"build failed: {one_line(exc)}"
            raise Unavailable(self.errors[key]) from None

    def _build(self, spec: EngineSpec) -> dict[str, str]:
        from tvm_conformer.bench.utterance import build_utterance_artifact, export_utterance_onnx
        from tvm_conformer.bench.workload import UTTERANCE_FRAMES
        from tvm_conformer.compiler.artifact import build_key
        from tvm_conformer.frontend import export_onnx
        from tvm_conformer.targets import load_target

        if spec.engine in ("ort", "openvino"):  # both run the same ONNX file
            path = self.dir / ("step.onnx" if spec.mode == "stream" else f"utterance-{UTTERANCE_FRAMES}.onnx")
            if not path.is_file():
                if spec.mode == "stream":
                    export_onnx(self.model, path)
                else:
                    export_utterance_onnx(self.model, UTTERANCE_FRAMES, path)
            if spec.precision == "int8":
                from tvm_conformer.bench.ort_int8 import quantize_step_onnx

                quantized = path.with_suffix(".int8.onnx")
                path = quantized if quantized.is_file() else quantize_step_onnx(path, quantized)
            return {"onnx": str(path)}
        opts = pipeline_options(spec, self.model.cfg.hash())
        key = build_key(self.checkpoint, load_target("host"), {"mode": spec.mode, **opts.to_dict()},
                        opts.database)
        art = self.dir / f"{spec.mode}-{spec.label}-{key}"
        if not (art / "manifest.json").is_file():
            if spec.mode == "stream":
                from tvm_conformer.compiler.compile import compile_artifact

                # no database but the one `opts` names: untuned and schedules must stay so
                compile_artifact(art, "host", self.checkpoint, opts=opts, quiet=True,
                                 use_default_database=False)
            else:
                build_utterance_artifact(art, self.model, UTTERANCE_FRAMES, opts)
        return {"artifact": str(art)}


def pipeline_options(spec: EngineSpec, config_hash: str):  # noqa: ANN201 - PipelineOptions
    """The `tvm_conformer` pipeline options of a TVM variant; `tuned` takes the database
    `compile` applies by default: this model's own (`tuning_logs/host-<config hash>/`, what
    `tune --model M` writes), else the committed host database (`tuning_logs/host/`), when its
    manifest matches this model and these options."""
    from tvm_conformer.compiler.database import database_dir, mismatch, read_manifest
    from tvm_conformer.compiler.pipeline import GRAPH_PASSES, PipelineOptions

    # built for its thread count (1: serial kernels); untuned kernels have no threads to set
    opts = PipelineOptions(passes=GRAPH_PASSES if spec.passes else (), precision=spec.precision,
                           schedules=spec.tvm != "untuned",
                           threads=spec.threads if spec.tvm != "untuned" else 0)
    if spec.tvm != "tuned":
        return opts
    log_dir = database_dir("host", config_hash)
    manifest = read_manifest(log_dir)
    if manifest is None:
        raise Unavailable(f"no database ({log_dir.relative_to(REPO_DIR)}/)")
    why = mismatch(manifest, config_hash, opts)
    if why is not None:
        raise Unavailable(f"database {log_dir.relative_to(REPO_DIR)}/ does not fit: {why}")
    return replace(opts, database=str(log_dir))


def buildable(builder: Builder, kind: str) -> bool:
    """Whether the TVM variant `kind` can be built here (else its row says why)."""
    try:
        builder.files(EngineSpec("tvm", tvm=kind))
    except Unavailable:
        return False
    return True


def benchmark_model(checkpoint: Path | None, cache: Path) -> tuple[Path, bool]:
    """The checkpoint to measure and whether it is trained: the shipped one, else a seeded
    random model of the default size (latency does not depend on the weights' values)."""
    if checkpoint is not None:
        return checkpoint, True
    if DEFAULT_CHECKPOINT.is_file():
        return DEFAULT_CHECKPOINT, True
    return random_checkpoint(ModelConfig(), cache), False


def random_checkpoint(cfg: ModelConfig, cache: Path) -> Path:
    import torch

    path = cache / "random" / f"{cfg.hash()}.pt"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        save_checkpoint(ConformerASR(cfg).eval(), path)
    return path
