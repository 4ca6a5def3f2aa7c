"""Speech synthesizers other than espeak-ng: Debian's festival (festvox voices) and flite.

festival starts slowly (it loads a voice in ~0.3 s), so `festival_batch` speaks many texts in
one process; flite starts in milliseconds and speaks one text per call. Both return float32
mono at 16 kHz.
"""

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

# festival voices (Debian festvox-kallpc16k, festvox-kdlpc16k, festvox-us-slt-hts)
FESTIVAL_VOICES = ("kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts")
# flite's built-in voices; kal16 is left out: its speaker is festival's kal_diphone
FLITE_VOICES = ("awb", "rms", "slt")
DURATION_STRETCH = (0.85, 1.2)


def _binary(name: str, package: str) -> str:
    exe = shutil.which(name)
    if exe is None:
        raise UserError(f"{name} is not installed; install it with `apt-get install {package}`")
    return exe


def festival_binary() -> str:
    return _binary("festival", "festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts")


def flite_binary() -> str:
    return _binary("flite", "flite")


def _check_text(text: str) -> None:
    if not text or any(c not in " 'abcdefghijklmnopqrstuvwxyz" for c in text):
        raise ValueError(f"synthesizer text must be normalized (a-z, space, apostrophe): {text!r}")


def festival_batch(items: list[tuple[str, str, float]]) -> list[np.ndarray]:
    """Speak (text, voice, duration_stretch) items with festival, one process per voice."""
    out: list[np.ndarray | None] = [None] * len(items)
    with tempfile.TemporaryDirectory() as tmp:
        by_voice: dict[str, list[int]] = {}
        for i, (text, voice, _) in enumerate(items):
            _check_text(text)
            if voice not in FESTIVAL_VOICES:
                raise ValueError(f"unknown festival voice {voice!r}; one of {FESTIVAL_VOICES}")
            by_voice.setdefault(voice, []).append(i)
        for voice, idx in by_voice.items():
            lines = [f"(voice_{voice})"]
            for i in idx:
                text, _, stretch = items[i]
                lines.append(f"(Parameter.set 'Duration_Stretch {stretch:.3f})")
                lines.append(f'(utt.save.wave (SynthText "{text}") "{tmp}/{i}.wav" \'riff)')
            script = Path(tmp) / f"{voice}.scm"
            script.write_text("\n".join(lines) + "\n")
            proc = subprocess.run([festival_binary(), "-b", str(script)], capture_output=True,
                                  text=True)
            for i in idx:
                wav = Path(tmp) / f"{i}.wav"
                if proc.returncode != 0 or not wav.is_file():
                    raise RuntimeError(f"festival failed for voice {voice!r}: "
                                       f"{proc.stderr.strip()[-300:]}")
                samples, sr = sf.read(wav, dtype="float32")
                out[i] = resample(samples, sr, SAMPLE_RATE)
    return [o for o in out if o is not None]


def flite_synthesize(text: str, voice: str, stretch: float = 1.0) -> np.ndarray:
    """Speak text with flite's built-in voice (FLITE_VOICES)."""
    _check_text(text)
    if voice not in FLITE_VOICES:
        raise ValueError(f"unknown flite voice {voice!r}; one of {FLITE_VOICES}")
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        proc = subprocess.run(
            [flite_binary(), "-voice", voice, "--setf", f"duration_stretch={stretch:.3f}",
             "-t", text, "-o", str(wav)], capture_output=True, text=True)
        if proc.returncode != 0 or not wav.is_file():
            raise RuntimeError(f"flite failed for voice {voice!r}: {proc.stderr.strip()}")
        samples, sr = sf.read(wav, dtype="float32")
    return resample(samples, sr, SAMPLE_RATE)
