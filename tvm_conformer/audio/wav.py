"""Read audio files into float32 mono samples, and resample them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from tvm_conformer.errors import UserError

MIN_SECONDS = 0.05  # shorter audio is rejected: it holds no speech to recognize
MAX_SECONDS = 600  # the longest input read: a longer one is refused before any allocation
_BLOCK = 1 << 16  # frames read at a time while downmixing


def load_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Read a WAV/FLAC/... file as float32 mono samples in [-1, 1] and its sample rate.

    Multi-channel audio is averaged to mono. Raises UserError for a missing, unreadable,
    empty, too short (< MIN_SECONDS) or too long (> MAX_SECONDS, judged from the header before
    anything is allocated, so a forged header cannot exhaust memory) file, and for samples that
    are not finite (NaN or infinite floats).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such audio file; check the path")
    try:
        with sf.SoundFile(path) as f:
            n, sr, channels = f.frames, f.samplerate, f.channels
            if n == 0:
                raise UserError(
                    f"{path}: the audio is empty (0 samples); record or pass a non-empty file"
                )
            if n < MIN_SECONDS * sr:
                raise UserError(
                    f"{path}: the audio lasts {n / sr:.3f} s, shorter than {MIN_SECONDS} s; "
                    "pass a longer recording"
                )
            if n > MAX_SECONDS * sr:
                raise UserError(
                    f"{path}: the header declares {n / sr:.0f} s of audio, more than {MAX_SECONDS} s; "
                    f"split it, e.g. `sox {path.name} part.wav trim 0 {MAX_SECONDS} : newfile : restart`"
                )
            out = np.empty(n, dtype=np.float32)
            pos = 0
            for block in f.blocks(blocksize=_BLOCK, dtype="float32", always_2d=True, frames=n):
                out[pos : pos + len(block)] = block[:, 0] if channels == 1 else block.mean(axis=1)
                pos += len(block)
    except sf.LibsndfileError as exc:
        raise UserError(
            f"{path}: not a readable audio file ({exc.error_string}); convert it to 16-bit WAV "
            "or FLAC, e.g. `sox in.xyz -b 16 out.wav`"
        ) from exc
    out = out[:pos]
    if not np.isfinite(out).all():
        bad = np.flatnonzero(~np.isfinite(out))
        raise UserError(
            f"{path}: {len(bad)} samples are NaN or infinite (the first at {bad[0] / sr:.3f} s); "
            "the recording is corrupted: repair or re-record it"
        )
    return np.clip(out, -1.0, 1.0, out=out), sr


def resample(samples: np.ndarray, sr_in: int, sr_out: int = 16000) -> np.ndarray:
    """Resample float mono samples from sr_in to sr_out Hz with soxr (high quality); float32 out."""
    samples = np.asarray(samples, dtype=np.float32)
    if sr_in == sr_out:
        return samples
    return soxr.resample(samples, sr_in, sr_out, quality="HQ").astype(np.float32, copy=False)
