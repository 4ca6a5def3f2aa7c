"""`train` never overwrites the shipped model unless asked by name, and saves atomically
(issue 18, item 6). Nothing here trains: `train` itself is replaced by a recorder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tvm_conformer import paths
from tvm_conformer.cli import main
from tvm_conformer.model import ConformerASR, load_checkpoint, save_checkpoint


@pytest.fixture
def recorded(monkeypatch, tmp_path):  # noqa: ANN201
    """The TrainConfig `tvm-conformer train` would train with, and where it would write."""
    from tvm_conformer.train import trainer

    seen = {}

    def fake_train(cfg):  # noqa: ANN001, ANN202
        seen["out"] = Path(cfg.out).resolve()
        return {"best_valid_wer": 1.0}

    monkeypatch.setattr(trainer, "train", fake_train)
    monkeypatch.setattr(paths, "RUNS_DIR", tmp_path / "runs", raising=False)
    return seen


def test_train_by_default_writes_a_new_file_in_a_run_directory(recorded, tmp_path):
    assert main(["train", "--data", str(tmp_path)]) == 0
    out = recorded["out"]
    assert out.parent.parent == tmp_path / "runs" and out.name == "conformer_dws.pt"
    assert paths.ASSETS_DIR not in out.parents


def test_vanilla_training_does_not_target_the_shipped_dws_model(recorded, tmp_path):
    assert main(["train", "--data", str(tmp_path), "--subsampling", "vanilla"]) == 0
    assert recorded["out"].name == "conformer_vanilla.pt"
    assert paths.ASSETS_DIR not in recorded["out"].parents


def test_the_shipped_model_is_written_only_when_named(recorded, tmp_path):
    shipped = paths.ASSETS_DIR / "conformer_dws.pt"
    assert main(["train", "--data", str(tmp_path), "--out", str(shipped)]) == 0
    assert recorded["out"] == shipped


def test_runs_are_gitignored():
    ignored = (paths.REPO_DIR / ".gitignore").read_text().split()
    assert "/runs/" in ignored


def test_a_save_interrupted_mid_write_leaves_the_old_checkpoint(tmp_path, monkeypatch):
    from conftest import TINY

    model = ConformerASR(TINY)
    path = tmp_path / "model.pt"
    save_checkpoint(model, path, {"valid_wer": 0.5})
    before = path.read_bytes()

    def torn_save(obj, f, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
        with open(f, "wb") if isinstance(f, (str, Path)) else f as out:
            out.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", torn_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(model, path, {"valid_wer": 0.1})
    assert path.read_bytes() == before
    assert load_checkpoint(path)[1]["valid_wer"] == 0.5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]  # no temporary left
