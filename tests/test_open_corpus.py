"""The open-vocabulary corpus: disjoint texts, held-out voices and synthesizer, recordings
shaped like real ones, augmentation that does what it says, and a resumable build."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tvm_conformer.audio.features import SAMPLE_RATE, SHERPA_FBANK
from tvm_conformer.data import grammar, open_corpus
from tvm_conformer.data.augment import (
    apply_gain,
    assemble,
    reverberate,
    room_impulse,
    speed_perturb,
)
from tvm_conformer.data.corpus import ALPHABET
from tvm_conformer.data.dataset import dataset_fbank, load_split
from tvm_conformer.data.engines import FLITE_VOICES
from tvm_conformer.data.synth import HELD_OUT_VOICES
from tvm_conformer.data.text import fortune_sentences
from tvm_conformer.errors import UserError

needs_fortunes = pytest.mark.skipif(not Path("/usr/share/games/fortunes/fortunes").is_file(),
                                    reason="apt-get install fortunes")


def test_grammars_share_no_template() -> None:
    train = {t for ts in grammar.TRAIN_TEMPLATES.values() for t in ts}
    unseen = {t for ts in grammar.UNSEEN_TEMPLATES.values() for t in ts}
    assert len(train) > 200 and len(unseen) > 60 and not train & unseen


@needs_fortunes
def test_plan_keeps_test_text_out_of_training() -> None:
    specs = open_corpus.plan(0, 400, 40, 30)
    train_sentences = {t for s in specs["train"] for t in s.texts}
    for split in ("test_unseen", "test_general", "test_grammar"):
        tests = {s.text for s in specs[split]}
        assert len(tests) == 30 and not tests & train_sentences, split
    assert {s.text for s in specs["test_heldout_synth"]} == {s.text for s in specs["test_unseen"]}
    assert {s.engine for s in specs["test_heldout_synth"]} == {"flite"}
    assert all(s.engine != "flite" for s in specs["train"] + specs["valid"])
    assert {s.voice for s in specs["test_heldout_voices"]} <= set(HELD_OUT_VOICES)
    assert not {s.voice for s in specs["train"]} & (set(HELD_OUT_VOICES) | set(FLITE_VOICES) - {"slt"})
    engines = {s.engine for s in specs["train"]}
    assert {"espeak", "festival", "none"} <= engines  # none: silence or noise alone
    assert any(len(s.texts) > 1 and s.gaps for s in specs["train"])  # pauses, several sentences
    assert max(s.lead for s in specs["train"]) > 1.5  # long silences occur
    assert all(set(s.text) <= set(ALPHABET) for v in specs.values() for s in v)
    # a larger plan extends a smaller one (a corpus can grow)
    bigger = open_corpus.plan(0, 800, 40, 30)
    assert [s.text for s in bigger["train"][:400]] == [s.text for s in specs["train"]]


@needs_fortunes
def test_fortunes_are_normalized_and_split_disjointly(tmp_path: Path) -> None:
    parts = fortune_sentences()
    assert len(parts["train"]) > 5000 and len(parts["test"]) > 100
    assert not set(parts["train"]) & set(parts["test"])
    with pytest.raises(UserError, match="apt-get install fortunes"):
        fortune_sentences(tmp_path)


def test_augmentation() -> None:
    rng = np.random.default_rng(0)
    tone = np.sin(2 * np.pi * 440 * np.arange(SAMPLE_RATE) / SAMPLE_RATE).astype(np.float32)
    fast = speed_perturb(tone, 1.1)
    assert abs(fast.size - SAMPLE_RATE / 1.1) < 2
    h = room_impulse(0.5, rng)
    assert h[0] == 1.0 and np.abs(h[int(0.45 * SAMPLE_RATE):]).max() < 0.01  # ~60 dB down
    wet = reverberate(tone, 0.5, rng)
    assert wet.size == tone.size and abs(np.sqrt(np.mean(wet**2)) - np.sqrt(0.5)) < 1e-3
    audio, spans = assemble([tone, tone[:800]], [0.5], lead=1.0, trail=0.25)
    assert spans == [(16000, 32000), (40000, 40800)] and audio.size == 40800 + 4000
    assert not audio[:16000].any() and not audio[32000:40000].any()
    loud, gain = apply_gain(audio * 3, 6.0)
    assert np.abs(loud).max() <= 0.99 + 1e-6 and gain < 0


@needs_fortunes
@pytest.mark.slow
def test_build_is_resumable_and_records_its_features(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(open_corpus, "PART", 8)
    out = tmp_path / "c"
    info = open_corpus.build_open_dataset(out, n_train=20, n_valid=3, n_test=3, workers=1,
                                          progress=False)
    assert info["splits"]["train"]["utterances"] == 20 and info["fbank"] == SHERPA_FBANK
    assert dataset_fbank(out) == SHERPA_FBANK
    first = load_split(out, "train")
    assert [u[2] for u in first] == [f"train-{i:06d}" for i in range(20)]
    rows = [json.loads(line) for line in (out / "train" / "manifest.jsonl").read_text().splitlines()]
    for row, (feats, text, _) in zip(rows, first, strict=True):
        assert row["text"] == text
        assert abs(len(feats) - row["seconds"] * 100) <= 1  # snip_edges false: 100 frames/s
    shutil.rmtree(out / "train" / "part-001")  # as if the build had stopped there
    open_corpus.build_open_dataset(out, n_train=20, n_valid=3, n_test=3, workers=1, progress=False)
    again = load_split(out, "train")
    assert all(np.array_equal(a[0], b[0]) and a[1] == b[1] for a, b in zip(first, again, strict=True))
    with pytest.raises(UserError, match="another corpus"):
        open_corpus.build_open_dataset(out, n_train=20, n_valid=3, n_test=3, seed=1,
                                       progress=False)
    # the curriculum's easy recordings: one sentence, dry, SNR >= 10 dB, <= 1.5 s of silence
    easy = open_corpus.easy_ids(out)
    for row in rows:
        assert (row["id"] in easy) == (
            len(row["texts"]) == 1 and row["rt60"] is None and row["lead"] + row["trail"] <= 1.5
            and (row["snr"] is None or row["snr"] >= 10)), row
    assert 0 < len(easy) < 20
    from tvm_conformer.train.trainer import TrainConfig, train
    run = tmp_path / "run"
    train(TrainConfig(data_dir=str(out), run_dir=str(run), threads=1, max_steps=3,
                      curriculum_steps=2, batch_frames=1500, warmup_steps=2, log_every=1,
                      model={"d_model": 32, "n_heads": 2, "n_layers": 1, "ffn_ratio": 2,
                             "conv_kernel": 5, "decoder_layers": 0}))
    events = [json.loads(line) for line in (run / "progress.jsonl").read_text().splitlines()]
    assert events[0] == {"event": "curriculum", "utterances": len(easy), "step": 0}
    assert [e["step"] for e in events if e["event"] == "train"] == [1, 2, 3]


@needs_fortunes
@pytest.mark.slow
def test_open_suite_runs_every_split_and_streaming_test(tmp_path: Path) -> None:
    import torch

    from tvm_conformer.evaluate import OPEN_TEST_SPLITS, open_suite
    from tvm_conformer.model import ConformerASR, ModelConfig
    from tvm_conformer.runtime.backend import TorchBackend

    out = tmp_path / "c"
    open_corpus.build_open_dataset(out, n_train=4, n_valid=2, n_test=4, workers=1, progress=False)
    torch.manual_seed(0)
    model = ConformerASR(ModelConfig(d_model=32, n_heads=2, n_layers=1, ffn_ratio=2,
                                     conv_kernel=5, decoder_layers=0, fbank=SHERPA_FBANK)).eval()
    res = {r["name"]: r for r in open_suite(TorchBackend(model), out, limit=4,
                                            stream_minutes=0.25, progress=False)}
    assert set(OPEN_TEST_SPLITS) <= set(res)
    refs = res["test_unseen_alone"]["references"]
    assert res["test_unseen"]["references"] == refs == res["pad_3s_noise_floor"]["references"]
    assert res["pairs_1.5s_pause"]["references"] == [f"{refs[0]} {refs[1]}", f"{refs[2]} {refs[3]}"]
    stream = res["stream_0.25min"]
    assert stream["audio_seconds"] >= 15 and stream["sentences"] > 4
    assert stream["references"][0].startswith(" ".join(refs))
    assert {"silence_3s", "white_noise_3s_-60dBFS"} <= set(res)
    if Path("/usr/share/sounds/alsa/Front_Left.wav").is_file():
        assert res["real_alsa"]["utterances"] == 8
