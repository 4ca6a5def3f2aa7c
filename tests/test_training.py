"""Training on a tiny synthesized dataset: the loss falls, a seed reproduces a run, and a run
started from a checkpoint resumes its learning-rate schedule where that one stopped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tvm_conformer.data.dataset import build_dataset
from tvm_conformer.errors import UserError
from tvm_conformer.model import load_checkpoint
from tvm_conformer.train.trainer import TrainConfig, resume, train

SMALL = {"d_model": 32, "n_heads": 2, "n_layers": 1, "ffn_ratio": 2, "conv_kernel": 5,
         "chunk_size": 4, "num_left_chunks": 2, "decoder_layers": 1}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data")
    build_dataset(out, n_train=48, n_valid=6, n_test=6, seed=3, progress=False)
    return out


def _run(data: Path, out: Path | None, **kw: object) -> dict:
    opts = {"threads": 1, "max_epochs": 3, "lr": 3e-3, "warmup_steps": 4, "batch_frames": 4000,
            "model": SMALL, "out": None if out is None else str(out), **kw}
    return train(TrainConfig(data_dir=str(data), **opts))


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


@pytest.mark.slow
def test_a_stopped_run_resumes_bit_identically(tiny_data: Path, tmp_path: Path) -> None:
    # an uninterrupted run of 14 steps vs one stopped at step 5 (mid-epoch) and resumed
    opts = {"max_epochs": 6, "save_minutes": 0.0, "log_every": 2}
    whole = _run(tiny_data, None, run_dir=str(tmp_path / "whole"), max_steps=14, **opts)
    part = _run(tiny_data, None, run_dir=str(tmp_path / "part"), max_steps=5, **opts)
    assert part["steps"] == 5 and (tmp_path / "part" / "last.pt").is_file()
    with pytest.raises(UserError, match="--resume"):
        _run(tiny_data, None, run_dir=str(tmp_path / "part"), max_steps=5, **opts)
    resumed = resume(tmp_path / "part", max_steps=14)
    assert resumed["steps"] == whole["steps"] == 14 and resumed["run_steps"] == 9
    a = torch.load(tmp_path / "whole" / "last.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "part" / "last.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    lines = [json.loads(x) for x in (tmp_path / "part" / "progress.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if x["event"] == "train"] == [2, 4, 6, 8, 10, 12, 14]
    assert load_checkpoint(tmp_path / "part" / "best.pt")[1]["valid_wer"] >= 0


def test_resume_needs_a_run(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="nothing to resume"):
        resume(tmp_path)


def test_a_curriculum_needs_the_open_corpus_manifest(tiny_data: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no easy recordings.*use 0"):
        _run(tiny_data, tmp_path / "a.pt", curriculum_steps=5)


def test_a_floored_model_learns_its_floor_and_cmvn_above_it(tiny_data: Path, tmp_path: Path) -> None:
    from tvm_conformer.data.dataset import load_split
    from tvm_conformer.train.trainer import _cmvn, feature_floor

    _run(tiny_data, tmp_path / "f.pt", max_steps=1, model={**SMALL, "feat_floor": 1.0})
    model, _ = load_checkpoint(tmp_path / "f.pt")
    floor = feature_floor(None, 1.0)  # the template corpus: the legacy fbank options
    torch.testing.assert_close(model.encoder.feat_floor, torch.from_numpy(floor), rtol=1e-3, atol=1e-3)
    mean, _ = _cmvn(load_split(tiny_data, "train"), floor)
    torch.testing.assert_close(model.encoder.feat_mean, torch.from_numpy(mean), rtol=1e-3, atol=1e-3)
