"""Seeded augmentation for recordings that look like what streaming meets.

Speed perturbation (resampling: tempo and pitch together), room reverberation (a synthetic
exponentially decaying impulse response), silence of any length before and after, pauses
between pieces of speech, coloured noise over the whole recording (speech and silence alike)
at an SNR relative to the speech, and a gain that never clips.
"""

from __future__ import annotations

import numpy as np

from tvm_conformer.audio.features import SAMPLE_RATE
from tvm_conformer.audio.wav import resample
from tvm_conformer.data.synth import PEAK, colored_noise


def speed_perturb(samples: np.ndarray, factor: float) -> np.ndarray:
    """Play `factor` times faster (duration / factor, pitch * factor), Kaldi-style."""
    if not 0.5 <= factor <= 2.0:
        raise ValueError(f"speed factor {factor} outside 0.5..2")
    if abs(factor - 1.0) < 1e-3:
        return samples.astype(np.float32)
    return resample(samples.astype(np.float32), SAMPLE_RATE, int(round(SAMPLE_RATE / factor)))


def room_impulse(rt60: float, rng: np.random.Generator, direct_ratio_db: float = 0.0) -> np.ndarray:
    """A synthetic room impulse response: a unit direct path, then Gaussian noise decaying by
    60 dB in rt60 seconds after a 2-10 ms gap, its energy `direct_ratio_db` below the direct
    path's; normalized to unit peak."""
    n = int(rt60 * SAMPLE_RATE)
    gap = int(rng.uniform(0.002, 0.010) * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    tail = rng.standard_normal(n) * np.exp(-6.9078 * t / rt60)  # ln(1000) = 60 dB in amplitude
    tail *= np.sqrt(10 ** (-direct_ratio_db / 10) / (np.sum(tail**2) + 1e-12))
    h = np.zeros(gap + n)
    h[0] = 1.0
    h[gap:] += tail
    return h / np.abs(h).max()


def reverberate(samples: np.ndarray, rt60: float, rng: np.random.Generator) -> np.ndarray:
    """Convolve with room_impulse(rt60) (FFT), keep the length and the speech's RMS."""
    h = room_impulse(rt60, rng, float(rng.uniform(-3.0, 6.0)))
    n = samples.size + h.size - 1
    size = 1 << (n - 1).bit_length()
    wet = np.fft.irfft(np.fft.rfft(samples, size) * np.fft.rfft(h, size), size)[: samples.size]
    rms_in = np.sqrt(np.mean(samples.astype(np.float64) ** 2)) + 1e-12
    return wet * (rms_in / (np.sqrt(np.mean(wet**2)) + 1e-12))


def draw_silence(rng: np.random.Generator, long_share: float = 0.5) -> float:
    """Seconds of silence: short (0.05-0.5 s) mostly, long (0.5-3 s) with prob `long_share`."""
    if rng.random() >= long_share:
        return float(rng.uniform(0.05, 0.5))
    return float(rng.uniform(0.5, 1.5) if rng.random() < 0.7 else rng.uniform(1.5, 3.0))


def assemble(
    pieces: list[np.ndarray], gaps: list[float], lead: float, trail: float
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """lead s of silence, the pieces separated by gaps (seconds), trail s: float64 audio and
    each piece's (start, end) sample span."""
    if len(gaps) != max(0, len(pieces) - 1):
        raise ValueError("need one gap between each two pieces")
    out = [np.zeros(int(lead * SAMPLE_RATE))]
    spans, pos = [], out[0].size
    for i, p in enumerate(pieces):
        out.append(p.astype(np.float64))
        spans.append((pos, pos + p.size))
        pos += p.size
        if i < len(gaps):
            out.append(np.zeros(int(gaps[i] * SAMPLE_RATE)))
            pos += out[-1].size
    out.append(np.zeros(int(trail * SAMPLE_RATE)))
    return np.concatenate(out), spans


def add_noise(audio: np.ndarray, speech_power: float, snr_db: float, exponent: float,
              rng: np.random.Generator) -> np.ndarray:
    """Add 1/f**exponent noise over the whole recording at snr_db below `speech_power`."""
    size = 1 << max(0, audio.size - 1).bit_length()  # a power of two: the FFT stays fast
    noise = colored_noise(size, exponent, rng)[: audio.size]
    noise /= noise.std() + 1e-12
    return audio + noise * np.sqrt(speech_power / 10 ** (snr_db / 10))


def apply_gain(audio: np.ndarray, gain_db: float) -> tuple[np.ndarray, float]:
    """audio * gain, the gain lowered so that the peak stays <= PEAK; (float32 audio, gain)."""
    peak = np.abs(audio).max() if audio.size else 0.0
    if peak > 0:
        gain_db = min(gain_db, 20 * np.log10(PEAK / peak))
    return (audio * 10 ** (gain_db / 20)).astype(np.float32), float(gain_db)
