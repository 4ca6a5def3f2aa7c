"""Training on a tiny synthesized dataset: the loss falls, a seed reproduces a run, and a run
started from a checkpoint resumes its learning-rate schedule where that one stopped."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tvm_conformer.data.dataset import build_dataset
from tvm_conformer.model import load_checkpoint
from tvm_conformer.train.trainer import TrainConfig, train

SMALL = {"d_model": 32, "n_heads": 2, "n_layers": 1, "ffn_ratio": 2, "conv_kernel": 5,
         "chunk_size": 4, "num_left_chunks": 2, "decoder_layers": 1}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data")
    build_dataset(out, n_train=48, n_valid=6, n_test=6, seed=3, progress=False)
    return out


def _run(data: Path, out: Path, **kw: object) -> dict:
    opts = {"threads": 1, "max_epochs": 3, "lr": 3e-3, "warmup_steps": 4, "batch_frames": 4000,
            "model": SMALL, **kw}
    return train(TrainConfig(data_dir=str(data), out=str(out), **opts))


@pytest.mark.slow
def test_training_learns_reproduces_and_resumes(tiny_data: Path, tmp_path: Path) -> None:
    a = _run(tiny_data, tmp_path / "a.pt")
    losses = [h["loss"] for h in a["history"]]
    assert len(losses) == 3 and losses[-1] < 0.8 * losses[0], losses
    model, meta = load_checkpoint(tmp_path / "a.pt")
    assert model.cfg.d_model == 32 and meta["history"][-1]["steps"] > 0
    # the same seed gives the same run, to the bit
    b = _run(tiny_data, tmp_path / "b.pt")
    assert [h["loss"] for h in b["history"]] == losses
    wa, wb = (load_checkpoint(tmp_path / n)[0].state_dict() for n in ("a.pt", "b.pt"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # continuing from a checkpoint resumes its schedule (no second warm-up), unless told
    saved_at = meta["history"][-1]["steps"]
    c = _run(tiny_data, tmp_path / "c.pt", init=str(tmp_path / "a.pt"), max_epochs=1)
    assert c["history"][0]["steps"] == saved_at + a["history"][0]["steps"]
    d = _run(tiny_data, tmp_path / "d.pt", init=str(tmp_path / "a.pt"), max_epochs=1, start_step=0)
    assert d["history"][0]["steps"] == a["history"][0]["steps"]
