"""`--decoding rescore --artifact A` rescores with the decoder of the checkpoint A was compiled
from (recorded in A's manifest by path and sha256), or refuses (issue 18, item 9); it used the
shipped checkpoint's decoder whatever A was. No compile: a stand-in backend with a manifest."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import pytest
import torch

from tvm_conformer.compiler.artifact import sha256_file
from tvm_conformer.errors import UserError
from tvm_conformer.model import load_checkpoint
from tvm_conformer.runtime.load import make_recognizer


def _backend(checkpoint, digest=None):  # noqa: ANN001, ANN202
    cfg = load_checkpoint(checkpoint)[0].cfg
    manifest = {"model": {"checkpoint": str(checkpoint),
                          "checkpoint_sha256": digest or sha256_file(checkpoint)}}
    return SimpleNamespace(name="tvm", config=cfg, manifest=manifest)


def _same_decoder(a, b) -> bool:  # noqa: ANN001
    sa, sb = a.decoder.state_dict(), b.decoder.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_rescoring_uses_the_artifacts_own_checkpoint(tiny_checkpoint, shipped_model):
    rec = make_recognizer(_backend(tiny_checkpoint), "rescore")
    tiny = load_checkpoint(tiny_checkpoint)[0]
    assert _same_decoder(rec.rescorer, tiny)
    assert rec.rescorer.cfg == tiny.cfg != shipped_model.cfg


def test_rescoring_refuses_when_the_artifacts_checkpoint_is_gone(tiny_checkpoint, tmp_path):
    moved = tmp_path / "gone.pt"
    shutil.copy(tiny_checkpoint, moved)
    backend = _backend(moved)
    moved.unlink()
    with pytest.raises(UserError, match="gone.pt") as exc:
        make_recognizer(backend, "rescore")
    assert "--model" in str(exc.value) and "\n" not in str(exc.value)


def test_rescoring_refuses_a_checkpoint_that_is_not_the_artifacts(tiny_checkpoint, tmp_path):
    backend = _backend(tiny_checkpoint, digest="0" * 64)  # the file there changed since
    with pytest.raises(UserError, match="sha256"):
        make_recognizer(backend, "rescore")
    with pytest.raises(UserError, match="sha256"):  # nor one named with --model
        make_recognizer(_backend(tiny_checkpoint), "rescore", model=shipped_path())


def shipped_path():  # noqa: ANN201
    from tvm_conformer.paths import DEFAULT_CHECKPOINT

    return DEFAULT_CHECKPOINT


def test_rescoring_without_an_artifact_uses_the_named_checkpoint(tiny_checkpoint):
    torch_backend = SimpleNamespace(name="torch", config=load_checkpoint(tiny_checkpoint)[0].cfg)
    rec = make_recognizer(torch_backend, "rescore", model=tiny_checkpoint)
    assert _same_decoder(rec.rescorer, load_checkpoint(tiny_checkpoint)[0])
