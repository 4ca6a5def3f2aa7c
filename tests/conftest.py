"""Shared fixtures: checkpoints (the shipped one, and a tiny random one for fast compiles), and
the tiny one compiled per (target, precision)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tvm_conformer.model import ConformerASR, ModelConfig, load_checkpoint, save_checkpoint
from tvm_conformer.paths import DEFAULT_CHECKPOINT

TINY = ModelConfig(d_model=32, n_heads=2, n_layers=2, ffn_ratio=2, conv_kernel=5, chunk_size=4,
                   num_left_chunks=2, decoder_layers=1)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small random-weight model (2 blocks, d=32): compiles in seconds."""
    torch.manual_seed(0)
    model = ConformerASR(TINY).eval()
    # non-trivial normalization statistics, so the buffers are exercised
    model.encoder.feat_mean.uniform_(-1, 1)
    model.encoder.feat_istd.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(model, path)
    return path


@pytest.fixture(scope="session")
def shipped_checkpoint() -> Path:
    if not DEFAULT_CHECKPOINT.is_file():
        pytest.fail(f"the shipped checkpoint {DEFAULT_CHECKPOINT} is missing")
    return DEFAULT_CHECKPOINT


@pytest.fixture(scope="session")
def shipped_model(shipped_checkpoint: Path) -> ConformerASR:
    return load_checkpoint(shipped_checkpoint)[0]


@pytest.fixture(scope="session")
def artifacts(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """Builds each (target, precision) of the tiny model once, on first use."""
    from tvm_conformer.compiler.compile import compile_artifact
    from tvm_conformer.compiler.pipeline import PipelineOptions
    from tvm_conformer.targets import load_target

    built: dict[tuple[str, str], Path] = {}

    def get(target: str, precision: str) -> Path:
        if (target, precision) not in built:
            out = tmp_path_factory.mktemp(f"{target}-{precision}")
            device = load_target(target)
            compile_artifact(out, device, tiny_checkpoint,
                             opts=PipelineOptions(family=device.family, precision=precision),
                             quiet=True, use_default_database=False)
            built[target, precision] = out
        return built[target, precision]

    return get
