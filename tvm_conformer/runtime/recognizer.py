"""A streaming recognizer in the spirit of sherpa-onnx: recognizer and streams are separate.

    rec = OnlineRecognizer(backend)
    s = rec.create_stream()
    s.accept_waveform(16000, samples); s.input_finished()
    while rec.is_ready(s):
        rec.decode_stream(s)
    print(rec.get_result(s))

Features are computed and CTC is decoded on the host; the step runs on the backend, which keeps
the caches on its device between chunks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import soxr

from tvm_conformer.audio.features import SAMPLE_RATE, StreamingFbank
from tvm_conformer.decode.ctc import ctc_greedy, ctc_prefix_beam_search
from tvm_conformer.model.subsampling import subsampled_length
from tvm_conformer.model.tokenizer import CharTokenizer
from tvm_conformer.runtime.backend import StepBackend


@dataclass
class Stream:
    """The state of one utterance: its features, its caches and the log-probs so far."""

    fbank: StreamingFbank
    state: object
    chunks_done: int = 0
    frames_out: int = 0  # encoder frames emitted
    finished: bool = False
    samples_seen: int = 0
    log_probs: list[np.ndarray] = field(default_factory=list)
    step_seconds: list[float] = field(default_factory=list)

    resampler: soxr.ResampleStream | None = None  # stateful: pieces join without edge effects
    input_rate: int = SAMPLE_RATE

    def accept_waveform(self, sample_rate: int, samples: np.ndarray) -> None:
        """Append float samples in [-1, 1] at `sample_rate` (one rate per stream)."""
        samples = np.asarray(samples, dtype=np.float32)
        if self.samples_seen == 0 and self.resampler is None and sample_rate != SAMPLE_RATE:
            self.input_rate = sample_rate
            self.resampler = soxr.ResampleStream(sample_rate, SAMPLE_RATE, 1, "float32", "HQ")
        if sample_rate != self.input_rate:
            raise ValueError(f"stream started at {self.input_rate} Hz, got {sample_rate} Hz")
        self.samples_seen += len(samples)
        if self.resampler is not None:
            samples = self.resampler.resample_chunk(samples)
        self.fbank.accept_waveform(SAMPLE_RATE, samples)

    def input_finished(self) -> None:
        if self.resampler is not None:
            self.fbank.accept_waveform(SAMPLE_RATE, self.resampler.resample_chunk(
                np.zeros(0, np.float32), last=True))
        self.fbank.input_finished()
        self.finished = True

    @property
    def audio_seconds(self) -> float:
        return self.samples_seen / self.input_rate


DECODINGS = ("greedy", "beam", "rescore")


class OnlineRecognizer:
    """`decoding`: greedy CTC, CTC prefix beam search, or beam search whose n-best the
    checkpoint's attention decoder rescores on the host (`rescorer`: a ConformerASR with a
    decoder; its encoder recomputes the utterance with the chunk mask, which equals the stream)."""

    def __init__(
        self, backend: StepBackend, decoding: str = "greedy", beam: int = 8, rescorer=None  # noqa: ANN001
    ) -> None:
        if decoding not in DECODINGS:
            raise ValueError(f"decoding must be one of {DECODINGS}")
        if decoding == "rescore" and (rescorer is None or rescorer.decoder is None):
            raise ValueError("rescore decoding needs a checkpoint with an attention decoder")
        self.backend = backend
        self.cfg = backend.config
        self.decoding = decoding
        self.beam = beam
        self.rescorer = rescorer
        self.tokenizer = CharTokenizer()

    def create_stream(self) -> Stream:
        return Stream(fbank=StreamingFbank(self.cfg.fbank), state=self.backend.initial_state())

    def _valid_frames(self, s: Stream) -> int:
        """Encoder frames the next chunk would emit: chunk_size, fewer at the end, 0 when done."""
        c = self.cfg.chunk_size
        start = s.chunks_done * self.cfg.chunk_stride_frames
        if s.fbank.num_frames_ready >= start + self.cfg.chunk_input_frames:
            return c
        if not s.finished:
            return 0
        return max(0, min(c, subsampled_length(s.fbank.num_frames_ready) - s.frames_out))

    def is_ready(self, s: Stream) -> bool:
        return self._valid_frames(s) > 0

    def chunk_inputs(self, s: Stream) -> tuple[np.ndarray, np.ndarray, int]:
        """The next chunk's fbank frames (zero-padded at the end) and attention mask."""
        cfg = self.cfg
        valid = self._valid_frames(s)
        start = s.chunks_done * cfg.chunk_stride_frames
        count = min(cfg.chunk_input_frames, s.fbank.num_frames_ready - start)
        feats = np.zeros((1, cfg.chunk_input_frames, cfg.n_mels), dtype=np.float32)
        feats[0, :count] = s.fbank.get_frames(start, count)
        cached = min(s.frames_out, cfg.left_frames)
        mask = np.zeros((1, cfg.left_frames + cfg.chunk_size), dtype=np.float32)
        mask[0, cfg.left_frames - cached : cfg.left_frames + valid] = 1.0
        return feats, mask, valid

    def decode_stream(self, s: Stream) -> None:
        """Runs one chunk through the backend."""
        feats, mask, valid = self.chunk_inputs(s)
        t0 = time.perf_counter()
        log_probs, s.state = self.backend.step(s.state, feats, mask)
        s.step_seconds.append(time.perf_counter() - t0)
        s.log_probs.append(np.asarray(log_probs)[:valid])
        s.chunks_done += 1
        s.frames_out += valid

    def all_log_probs(self, s: Stream) -> np.ndarray:
        if not s.log_probs:
            return np.zeros((0, self.cfg.vocab_size), dtype=np.float32)
        return np.concatenate(s.log_probs, axis=0)

    def get_result(self, s: Stream) -> str:
        lp = self.all_log_probs(s)
        if self.decoding == "greedy" or not len(lp):
            return self.tokenizer.decode(ctc_greedy(lp))
        nbest = ctc_prefix_beam_search(lp, self.beam)
        if self.decoding == "beam":
            return self.tokenizer.decode(nbest[0][0])
        import torch

        from tvm_conformer.decode.rescoring import attention_rescore

        n = s.fbank.num_frames_ready
        feats = torch.from_numpy(s.fbank.get_frames(0, n))[None]
        with torch.no_grad():
            enc, _ = self.rescorer.encoder(feats, torch.tensor([n]))
        return self.tokenizer.decode(attention_rescore(self.rescorer.decoder, enc, nbest))


@dataclass
class Transcript:
    text: str
    audio_seconds: float
    compute_seconds: float
    step_seconds: list[float]
    log_probs: np.ndarray

    @property
    def rtf(self) -> float:
        """Real-time factor: compute time (features + steps + decoding) over audio duration."""
        return self.compute_seconds / self.audio_seconds if self.audio_seconds else float("nan")


def transcribe_samples(
    rec: OnlineRecognizer, samples: np.ndarray, sample_rate: int, piece_seconds: float = 0.1
) -> Transcript:
    """Streams `samples` through `rec` in pieces of `piece_seconds`, as a microphone would."""
    s = rec.create_stream()
    t0 = time.perf_counter()
    piece = max(1, int(piece_seconds * sample_rate))
    for i in range(0, len(samples), piece):
        s.accept_waveform(sample_rate, samples[i : i + piece])
        while rec.is_ready(s):
            rec.decode_stream(s)
    s.input_finished()
    while rec.is_ready(s):
        rec.decode_stream(s)
    text = rec.get_result(s)
    return Transcript(text, s.audio_seconds, time.perf_counter() - t0, s.step_seconds, rec.all_log_probs(s))
