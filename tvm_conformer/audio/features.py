"""Kaldi-style 80-bin log-mel filterbank features, batch and streaming, via kaldi-native-fbank.

Both `compute_fbank` and `StreamingFbank` use `fbank_options()`, so training features and
streaming-inference features are computed by the same code.
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


def fbank_options() -> knf.FbankOptions:
    """The one set of fbank options: 16 kHz, 25/10 ms povey frames, 80 mel bins, no dither."""
    opts = knf.FbankOptions()
    opts.frame_opts.samp_freq = SAMPLE_RATE
    opts.frame_opts.frame_length_ms = FRAME_LENGTH_MS
    opts.frame_opts.frame_shift_ms = FRAME_SHIFT_MS
    opts.frame_opts.dither = 0.0
    opts.frame_opts.snip_edges = True
    opts.frame_opts.window_type = "povey"
    opts.frame_opts.preemph_coeff = 0.97
    opts.frame_opts.remove_dc_offset = True
    opts.mel_opts.num_bins = N_MELS
    opts.mel_opts.low_freq = 20.0
    opts.mel_opts.high_freq = 0.0  # 0 means the Nyquist frequency
    return opts


class StreamingFbank:
    """Incremental fbank: feed 16 kHz float samples in any pieces, read frames as they are ready."""

    def __init__(self) -> None:
        self._fbank = knf.OnlineFbank(fbank_options())

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


def compute_fbank(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Log-mel features (T, N_MELS) float32 of float mono samples; resamples to 16 kHz if needed."""
    fbank = StreamingFbank()
    fbank.accept_waveform(SAMPLE_RATE, resample(samples, sample_rate, SAMPLE_RATE))
    fbank.input_finished()
    return fbank.get_frames(0, fbank.num_frames_ready)
