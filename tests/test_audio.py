"""Audio loading and fbank features: streaming == batch, and agreement with a numpy Kaldi reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tvm_conformer.audio.features import (
    LEGACY_FBANK,
    N_MELS,
    SAMPLE_RATE,
    SHERPA_FBANK,
    StreamingFbank,
    check_fbank,
    compute_fbank,
)
from tvm_conformer.audio.wav import MIN_SECONDS, load_audio, resample
from tvm_conformer.errors import UserError


def speech_like(seconds: float, seed: int = 0, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Voiced harmonics with gliding pitch and formant peaks, syllable envelope, noise bursts."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 140 + 40 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voiced = np.zeros_like(t)
    for k in range(1, 40):
        fk = k * 140
        gain = sum(np.exp(-(((fk - fm) / 150) ** 2)) for fm in (500, 1500, 2500)) + 0.05
        voiced += gain / k * np.sin(k * phase)
    envelope = np.clip(np.sin(2 * np.pi * 3.0 * t), 0, None) ** 2
    hiss = rng.standard_normal(t.size) * (np.sin(2 * np.pi * 3.0 * t) < -0.5)
    x = 0.3 * envelope * voiced / np.abs(voiced).max() + 0.05 * hiss
    x += 1e-3 * rng.standard_normal(t.size)  # background noise floor
    return x.astype(np.float32)


def reference_fbank(samples: np.ndarray, snip_edges: bool = True,
                    high_freq: float = 0.0) -> np.ndarray:
    """Straightforward numpy Kaldi fbank: same options as compute_fbank, float64 throughout."""
    x = samples.astype(np.float64) * 32768.0
    sr, length, shift, nfft = SAMPLE_RATE, 400, 160, 512
    if snip_edges:
        n_frames = 1 + (x.size - length) // shift
        idx = np.arange(length)[None, :] + shift * np.arange(n_frames)[:, None]
    else:  # Kaldi: frames centred on i*shift + shift/2, the edges mirrored
        n_frames = (x.size + shift // 2) // shift
        idx = (np.arange(length)[None, :] + shift * np.arange(n_frames)[:, None]
               + shift // 2 - length // 2)
        idx = np.where(idx < 0, -idx - 1, idx)
        idx = np.where(idx >= x.size, 2 * x.size - 1 - idx, idx)
    frames = x[idx]
    frames -= frames.mean(axis=1, keepdims=True)  # remove DC offset
    frames[:, 1:] -= 0.97 * frames[:, :-1].copy()  # pre-emphasis; Kaldi: x[0] -= 0.97 x[0]
    frames[:, 0] *= 1 - 0.97
    frames *= (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(length) / (length - 1))) ** 0.85  # povey
    power = np.abs(np.fft.rfft(frames, n=nfft)) ** 2

    def mel(f: np.ndarray | float) -> np.ndarray:
        return 1127.0 * np.log(1.0 + np.asarray(f) / 700.0)

    lo, hi = mel(20.0), mel(high_freq if high_freq > 0 else sr / 2 + high_freq)
    delta = (hi - lo) / (N_MELS + 1)
    fft_mel = mel(np.arange(nfft // 2) * sr / nfft)  # Kaldi leaves out the Nyquist bin
    banks = np.zeros((N_MELS, nfft // 2 + 1))
    for b in range(N_MELS):
        left, center, right = lo + b * delta, lo + (b + 1) * delta, lo + (b + 2) * delta
        up = (fft_mel - left) / (center - left)
        down = (right - fft_mel) / (right - center)
        inside = (fft_mel > left) & (fft_mel < right)
        banks[b, : nfft // 2] = np.where(inside, np.where(fft_mel <= center, up, down), 0.0)
    return np.log(np.maximum(power @ banks.T, np.finfo(np.float32).eps))


def _stream_in_random_pieces(x: np.ndarray, rng: np.random.Generator, longest: int,
                             fbank_opts: dict | None = None) -> np.ndarray:
    """`x` through `StreamingFbank` in pieces of 1 .. `longest` - 1 samples: every frame."""
    stream, pos = StreamingFbank(fbank_opts), 0
    while pos < x.size:
        n = int(rng.integers(1, longest))
        stream.accept_waveform(SAMPLE_RATE, x[pos : pos + n])
        pos += n
    stream.input_finished()
    return stream.get_frames(0, stream.num_frames_ready)


def test_streaming_equals_batch_for_random_pieces() -> None:
    x = speech_like(2.0, seed=1)
    batch = compute_fbank(x)
    assert batch.shape == (1 + (x.size - 400) // 160, N_MELS) and batch.dtype == np.float32
    rng = np.random.default_rng(0)
    for _ in range(3):
        np.testing.assert_array_equal(_stream_in_random_pieces(x, rng, 2000), batch)


def test_matches_independent_numpy_reference() -> None:
    # kaldi-native-fbank works in float32 (its own FFT), the reference in float64. On this
    # signal's log-mel values (-0.3 .. 24) the largest difference is ~1.3e-4; 1e-3 leaves margin.
    x = speech_like(1.5, seed=2)
    ours, ref = compute_fbank(x), reference_fbank(x)
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() < 1e-3


def test_sherpa_options_match_the_reference_and_stream() -> None:
    # the options of new checkpoints (sherpa-onnx's defaults): mirrored edges, 20..7600 Hz
    x = speech_like(1.5, seed=4)
    ours = compute_fbank(x, fbank_opts=SHERPA_FBANK)
    ref = reference_fbank(x, snip_edges=False, high_freq=-400.0)
    assert ours.shape == ref.shape == ((x.size + 80) // 160, N_MELS)
    assert np.abs(ours - ref).max() < 1e-3
    assert np.abs(ours - compute_fbank(x)[:1]).max() > 0.1  # not the legacy features
    streamed = _stream_in_random_pieces(x, np.random.default_rng(1), 3000, SHERPA_FBANK)
    np.testing.assert_array_equal(streamed, ours)


def test_fbank_options_are_checked() -> None:
    assert check_fbank(None) == LEGACY_FBANK
    with pytest.raises(ValueError, match="unknown fbank options"):
        check_fbank({"snip_edge": False})
    with pytest.raises(ValueError, match="high_freq"):
        check_fbank({"low_freq": 8000.0})


def test_compute_fbank_resamples() -> None:
    x16 = speech_like(1.0, seed=3)
    x8 = resample(x16, SAMPLE_RATE, 8000)
    feats = compute_fbank(x8, 8000)
    assert abs(feats.shape[0] - compute_fbank(x16).shape[0]) <= 1


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such audio file"):
        load_audio(tmp_path / "nope.wav")


def test_text_file_named_wav(tmp_path: Path) -> None:
    path = tmp_path / "notes.wav"
    path.write_text("this is not audio\n")
    with pytest.raises(UserError, match="not a readable audio file.*convert"):
        load_audio(path)


def test_empty_and_too_short(tmp_path: Path) -> None:
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    with pytest.raises(UserError, match="empty"):
        load_audio(tmp_path / "empty.wav")
    sf.write(tmp_path / "short.wav", np.zeros(int(MIN_SECONDS * 16000) - 1, np.float32), 16000)
    with pytest.raises(UserError, match="shorter than"):
        load_audio(tmp_path / "short.wav")


def test_stereo_is_downmixed(tmp_path: Path) -> None:
    left = speech_like(0.5, seed=4)
    right = -0.5 * left
    sf.write(tmp_path / "stereo.flac", np.stack([left, right], axis=1), 16000, subtype="PCM_16")
    samples, sr = load_audio(tmp_path / "stereo.flac")
    assert sr == 16000 and samples.ndim == 1 and samples.dtype == np.float32
    np.testing.assert_allclose(samples, 0.25 * left, atol=2 / 32768)


def test_unsigned_8bit_wav(tmp_path: Path) -> None:
    x = np.array([-1.0, -0.5, 0.0, 0.25, 0.5, 0.9921875] * 200, dtype=np.float32)
    sf.write(tmp_path / "u8.wav", x, 8000, subtype="PCM_U8")
    samples, sr = load_audio(tmp_path / "u8.wav")
    assert sr == 8000
    np.testing.assert_allclose(samples, x, atol=1 / 128)


def test_8khz_file_resampled(tmp_path: Path) -> None:
    t = np.arange(8000) / 8000
    sf.write(tmp_path / "tone8k.wav", 0.5 * np.sin(2 * np.pi * 440 * t), 8000, subtype="PCM_16")
    samples, sr = load_audio(tmp_path / "tone8k.wav")
    up = resample(samples, sr, SAMPLE_RATE)
    assert up.dtype == np.float32 and abs(up.size - 16000) <= 1
    spectrum = np.abs(np.fft.rfft(up[2000:14000]))
    assert abs(np.argmax(spectrum) * SAMPLE_RATE / 12000 - 440) < 2
