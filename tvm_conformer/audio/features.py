"""Kaldi-style 80-bin log-mel filterbank features, batch and streaming, via kaldi-native-fbank.

Both `compute_fbank` and `StreamingFbank` use `fbank_options(fbank)`, so training features and
streaming-inference features are computed by the same code. `fbank` is the checkpoint's
`ModelConfig.fbank` (the options a model was trained on): `LEGACY_FBANK` (snip_edges true,
high_freq 0 = Nyquist) for checkpoints trained before the field existed, `SHERPA_FBANK`
(snip_edges false, high_freq -400: sherpa-onnx's and icefall's defaults) for new ones.
"""

from __future__ import annotations

import kaldi_native_fbank as knf
import numpy as np

from tvm_conformer.audio.wav import resample

SAMPLE_RATE = 16000
N_MELS = 80
FRAME_LENGTH_MS = 25.0
FRAME_SHIFT_MS = 10.0
INT16_SCALE = 32768.0  # Kaldi expects samples in the int16 range

# The options that vary between models (everything else is fixed: 16 kHz, 25/10 ms povey
# frames, preemphasis 0.97, DC removal, 80 bins, samples scaled to the int16 range).
LEGACY_FBANK: dict = {"snip_edges": True, "low_freq": 20.0, "high_freq": 0.0, "dither": 0.0}
SHERPA_FBANK: dict = {"snip_edges": False, "low_freq": 20.0, "high_freq": -400.0, "dither": 0.0}
FBANK_PRESETS = {"legacy": LEGACY_FBANK, "sherpa": SHERPA_FBANK}


def check_fbank(fbank: dict | None) -> dict:
    """The full option dict (LEGACY_FBANK when None); ValueError for unknown keys or bad values."""
    if fbank is None:
        return dict(LEGACY_FBANK)
    unknown = set(fbank) - set(LEGACY_FBANK)
    if unknown:
        raise ValueError(f"unknown fbank options {sorted(unknown)}; known: {sorted(LEGACY_FBANK)}")
    out = {**LEGACY_FBANK, **fbank}
    out["snip_edges"] = bool(out["snip_edges"])
    for key in ("low_freq", "high_freq", "dither"):
        out[key] = float(out[key])
    nyquist = SAMPLE_RATE / 2
    high = out["high_freq"] if out["high_freq"] > 0 else nyquist + out["high_freq"]
    if not 0 <= out["low_freq"] < high <= nyquist:
        raise ValueError(f"fbank low_freq {out['low_freq']} / high_freq {out['high_freq']}: "
                         f"need 0 <= low < high <= {nyquist} (high <= 0 counts from Nyquist)")
    return out


def fbank_options(fbank: dict | None = None) -> knf.FbankOptions:
    """kaldi-native-fbank options for a model's `fbank` dict (None: the legacy options)."""
    fb = check_fbank(fbank)
    opts = knf.FbankOptions()
    opts.frame_opts.samp_freq = SAMPLE_RATE
    opts.frame_opts.frame_length_ms = FRAME_LENGTH_MS
    opts.frame_opts.frame_shift_ms = FRAME_SHIFT_MS
    opts.frame_opts.dither = fb["dither"]
    opts.frame_opts.snip_edges = fb["snip_edges"]
    opts.frame_opts.window_type = "povey"
    opts.frame_opts.preemph_coeff = 0.97
    opts.frame_opts.remove_dc_offset = True
    opts.mel_opts.num_bins = N_MELS
    opts.mel_opts.low_freq = fb["low_freq"]
    opts.mel_opts.high_freq = fb["high_freq"]  # <= 0 counts down from the Nyquist frequency
    return opts


class StreamingFbank:
    """Incremental fbank: feed 16 kHz float samples in any pieces, read frames as they are ready.

    `fbank`: the model's fbank options (`ModelConfig.fbank`); None keeps the legacy options.
    """

    def __init__(self, fbank: dict | None = None) -> None:
        self._fbank = knf.OnlineFbank(fbank_options(fbank))

    def accept_waveform(self, sample_rate: int, samples: np.ndarray) -> None:
        """Append float samples in [-1, 1]; sample_rate must be SAMPLE_RATE (resample first)."""
        if sample_rate != SAMPLE_RATE:
            raise ValueError(f"StreamingFbank takes {SAMPLE_RATE} Hz audio, got {sample_rate} Hz")
        scaled = np.asarray(samples, dtype=np.float32) * np.float32(INT16_SCALE)
        self._fbank.accept_waveform(SAMPLE_RATE, scaled)

    def input_finished(self) -> None:
        """Declare the end of the audio."""
        self._fbank.input_finished()

    @property
    def num_frames_ready(self) -> int:
        """Number of frames computed so far."""
        return int(self._fbank.num_frames_ready)

    def get_frames(self, start: int, count: int) -> np.ndarray:
        """Frames start .. start+count-1 as a (count, N_MELS) float32 array."""
        if start < 0 or count < 0 or start + count > self.num_frames_ready:
            raise IndexError(
                f"frames {start}..{start + count} requested, {self.num_frames_ready} ready"
            )
        out = np.empty((count, N_MELS), dtype=np.float32)
        for i in range(count):
            out[i] = self._fbank.get_frame(start + i)  # copies: the buffer is the extractor's
        return out


def compute_fbank(
    samples: np.ndarray, sample_rate: int = SAMPLE_RATE, fbank_opts: dict | None = None
) -> np.ndarray:
    """Log-mel features (T, N_MELS) float32 of float mono samples; resamples to 16 kHz if needed.

    `fbank_opts`: the model's fbank options (None: the legacy options)."""
    fbank = StreamingFbank(fbank_opts)
    fbank.accept_waveform(SAMPLE_RATE, resample(samples, sample_rate, SAMPLE_RATE))
    fbank.input_finished()
    return fbank.get_frames(0, fbank.num_frames_ready)
