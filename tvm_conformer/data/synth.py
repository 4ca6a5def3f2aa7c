"""Speech from espeak-ng voices, and seeded augmentation (silence padding, coloured noise, gain)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from tvm_conformer.audio.features import SAMPLE_RATE
from tvm_conformer.audio.wav import resample
from tvm_conformer.errors import UserError

ACCENTS = (
    "en-us", "en", "en-gb-x-rp", "en-029", "en-gb-scotland", "en-gb-x-gbclan",
    "en-gb-x-gbcwmd", "en-us-nyc",
)  # fmt: skip
TRAIN_VARIANTS = (
    "", "+m1", "+m2", "+m3", "+m4", "+m5", "+m6", "+m7", "+f1", "+f2", "+f3", "+f4",
    "+klatt", "+klatt2", "+klatt3",
)  # fmt: skip
# Never used in training: four unseen accent+variant pairings, and two unseen variants.
HELD_OUT_VOICES = (
    "en-gb-scotland+f3", "en-029+m5", "en-us-nyc+klatt2", "en-gb-x-rp+f4",
    "en-us+m8", "en-gb-x-gbcwmd+f5",
)  # fmt: skip
TRAIN_VOICES = tuple(
    accent + variant
    for accent in ACCENTS
    for variant in TRAIN_VARIANTS
    if accent + variant not in HELD_OUT_VOICES
)
SPEED_WPM = (130, 190)
PITCH = (30, 70)
SNR_DB = (10.0, 30.0)
GAIN_DB = (-12.0, 6.0)
SILENCE_SECONDS = (0.1, 0.4)
PEAK = 0.99  # the gain is lowered if it would clip beyond this


def espeak_binary() -> str:
    """Path of the espeak-ng executable; UserError if it is not installed."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise UserError("espeak-ng is not installed; install it with `apt-get install espeak-ng`")
    return exe


def synthesize(
    text: str, voice: str, speed_wpm: int, pitch: int, out_path: str | Path | None = None
) -> np.ndarray:
    """Speak text with espeak-ng; float32 mono samples at 16 kHz.

    If out_path is given, espeak-ng's own 22.05 kHz WAV is kept there.
    """
    if text.startswith("-"):
        raise ValueError(
            f"text must not start with '-' (espeak-ng would take it as an option): {text!r}"
        )
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(out_path) if out_path is not None else Path(tmp) / "speech.wav"
        cmd = [
            espeak_binary(),
            "-v",
            voice,
            "-s",
            str(speed_wpm),
            "-p",
            str(pitch),
            "-w",
            str(wav),
            text,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not wav.is_file():
            raise RuntimeError(f"espeak-ng failed for voice {voice!r}: {proc.stderr.strip()}")
        samples, sr = sf.read(wav, dtype="float32")
    return resample(samples, sr, SAMPLE_RATE)


def colored_noise(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Unit-variance noise with power spectrum 1/f**exponent (0 white, 1 pink, 2 brown)."""
    white = rng.standard_normal(n)
    if exponent == 0:
        return white
    spectrum = np.fft.rfft(white)
    freqs = np.arange(spectrum.size, dtype=np.float64)
    freqs[0] = 1.0
    spectrum /= freqs ** (exponent / 2)
    spectrum[0] = 0.0
    noise = np.fft.irfft(spectrum, n)
    return noise / (noise.std() + 1e-12)


def augment(samples: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, float, float]:
    """Pad silence, add white/pink/brown noise and apply a gain; returns (audio, snr_db, gain_db).

    The SNR is relative to the unpadded speech power; gain_db is the applied (peak-limited) gain.
    """
    lead, trail = (int(rng.uniform(*SILENCE_SECONDS) * SAMPLE_RATE) for _ in range(2))
    speech = samples.astype(np.float64)
    audio = np.concatenate([np.zeros(lead), speech, np.zeros(trail)])
    snr_db = float(rng.uniform(*SNR_DB))
    noise = colored_noise(audio.size, float(rng.choice([0.0, 1.0, 2.0])), rng)
    audio += noise * np.sqrt(np.mean(speech**2) / 10 ** (snr_db / 10))
    gain_db = float(rng.uniform(*GAIN_DB))
    gain_db = min(gain_db, 20 * np.log10(PEAK / (np.abs(audio).max() + 1e-12)))
    return (audio * 10 ** (gain_db / 20)).astype(np.float32), snr_db, float(gain_db)
