"""The streaming loop of sherpa-onnx for a model of the WeNet streaming-CTC contract.

What sherpa-onnx does (sherpa-onnx/csrc/online-wenet-ctc-model.cc, online-recognizer-ctc-impl.h,
features.h), and so what this module does, so that the text is the same:

- features: kaldi-native-fbank with sherpa-onnx's options (dither 0, snip_edges false, 20 Hz to
  Nyquist - 400 Hz, povey), samples scaled to the int16 range;
- a call takes `chunk_frames` fbank frames starting at `processed`, which then grows by
  `chunk_shift`; a call is made only when `processed + chunk_frames < frames ready` (full
  chunks only: the end of an utterance is flushed by padding it with silence, 0.66 s as in
  sherpa-onnx's examples, which `Stream.input_finished` appends);
- `offset` starts at required_cache_size and grows by the log-probs' frames after each call;
  the attention mask zeroes the cache positions not filled yet
  (`chunk_idx = offset / chunk - left_chunks`: the first `cache - chunk_idx * chunk`);
- greedy CTC across calls (a repeated token after a blank counts again), then the symbols,
  a leading `▁` as a space, stripped.

Backends: `OnnxContractBackend` (ONNX Runtime on the file: the host reference) and
`TVMContractBackend` (a compiled artifact). Both keep (offset, attn_cache, conv_cache) as state.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import kaldi_native_fbank as knf
import numpy as np

from tvm_conformer.errors import UserError
from tvm_conformer.frontend.contract import TAIL_PADDING_SECONDS, ContractSpec


def fbank_options(features: dict) -> knf.FbankOptions:
    opts = knf.FbankOptions()
    f = opts.frame_opts
    f.samp_freq = float(features["sample_rate"])
    f.frame_length_ms = float(features["frame_length_ms"])
    f.frame_shift_ms = float(features["frame_shift_ms"])
    f.dither = float(features["dither"])
    f.snip_edges = bool(features["snip_edges"])
    f.window_type = features["window_type"]
    f.preemph_coeff = float(features["preemph_coeff"])
    f.remove_dc_offset = bool(features["remove_dc_offset"])
    opts.mel_opts.num_bins = int(features["num_bins"])
    opts.mel_opts.low_freq = float(features["low_freq"])
    opts.mel_opts.high_freq = float(features["high_freq"])
    return opts


@dataclass
class ContractStream:
    fbank: knf.OnlineFbank
    state: object
    sample_rate: int
    scale: float
    processed: int = 0  # fbank frames consumed (sherpa-onnx's num_processed_frames)
    tokens: list[int] = field(default_factory=list)
    frames: list[int] = field(default_factory=list)  # greedy pick per output frame
    token_frames: list[int] = field(default_factory=list)  # output frame of each token
    trailing_blanks: int = 0
    samples_seen: int = 0
    finished: bool = False
    log_probs: list[np.ndarray] = field(default_factory=list)
    step_seconds: list[float] = field(default_factory=list)
    input_rate: int = 0
    resampler: object = None  # soxr.ResampleStream when the audio is not at the model's rate

    def accept_waveform(self, sample_rate: int, samples: np.ndarray) -> None:
        """Float samples in [-1, 1] at `sample_rate` (one rate per stream; resampled to the
        model's rate by soxr, where sherpa-onnx uses its own resampler)."""
        samples = np.asarray(samples, np.float32)
        if not self.input_rate:
            self.input_rate = sample_rate
            if sample_rate != self.sample_rate:
                import soxr

                self.resampler = soxr.ResampleStream(sample_rate, self.sample_rate, 1, "float32", "HQ")
        if sample_rate != self.input_rate:
            raise UserError(f"stream started at {self.input_rate} Hz, got {sample_rate} Hz")
        self.samples_seen += len(samples)
        if self.resampler is not None:
            samples = self.resampler.resample_chunk(samples)
        self.fbank.accept_waveform(float(self.sample_rate), samples * np.float32(self.scale))

    def input_finished(self) -> None:
        """Pads with 0.66 s of silence (as sherpa-onnx's examples do), then ends the input."""
        if self.resampler is not None:
            rest = self.resampler.resample_chunk(np.zeros(0, np.float32), last=True)
            self.fbank.accept_waveform(float(self.sample_rate), rest * np.float32(self.scale))
        pad = np.zeros(int(TAIL_PADDING_SECONDS * self.sample_rate), np.float32)
        self.fbank.accept_waveform(float(self.sample_rate), pad)
        self.fbank.input_finished()
        self.finished = True

    @property
    def audio_seconds(self) -> float:
        return self.samples_seen / (self.input_rate or self.sample_rate)


class ContractRecognizer:
    """sherpa-onnx's OnlineRecognizer for a wenet_ctc model, over a contract backend."""

    decoding = "greedy"

    def __init__(self, backend) -> None:  # noqa: ANN001 - a contract backend
        self.backend = backend
        self.spec: ContractSpec = backend.spec
        self.features = dict(self.spec.features)

    def create_stream(self) -> ContractStream:
        f = self.features
        return ContractStream(knf.OnlineFbank(fbank_options(f)), self.backend.initial_state(),
                              int(f["sample_rate"]), float(f["sample_scale"]))

    def is_ready(self, s: ContractStream) -> bool:
        return s.processed + self.spec.chunk_frames < s.fbank.num_frames_ready

    def attn_mask(self, offset: int) -> np.ndarray:
        """sherpa-onnx's mask: the cache positions not filled yet are 0, the rest 1."""
        sp = self.spec
        mask = np.ones((1, 1, sp.cache + sp.chunk_size), dtype=bool)
        chunk_idx = offset // sp.chunk_size - sp.left_chunks
        if chunk_idx < sp.left_chunks:
            mask[..., : sp.cache - chunk_idx * sp.chunk_size] = False
        return mask

    def chunk_features(self, s: ContractStream) -> np.ndarray:
        sp = self.spec
        x = np.empty((1, sp.chunk_frames, int(self.features["num_bins"])), np.float32)
        for i in range(sp.chunk_frames):
            x[0, i] = s.fbank.get_frame(s.processed + i)
        return x

    def decode_stream(self, s: ContractStream) -> None:
        x = self.chunk_features(s)
        s.processed += self.spec.chunk_shift
        t0 = time.perf_counter()
        lp, s.state = self.backend.step(s.state, x, self.attn_mask(self.backend.offset(s.state)))
        s.step_seconds.append(time.perf_counter() - t0)
        lp = np.asarray(lp)
        s.log_probs.append(lp)
        self._greedy(s, lp)

    def _greedy(self, s: ContractStream, lp: np.ndarray) -> None:
        """sherpa-onnx's OnlineCtcGreedySearchDecoder, frame by frame."""
        blank = self.spec.blank_id
        prev = -1
        if s.tokens:
            prev = blank if s.trailing_blanks > 0 else s.tokens[-1]
        for y in np.argmax(lp, axis=-1).tolist():
            s.frames.append(y)
            s.trailing_blanks = s.trailing_blanks + 1 if y == blank else 0
            if y != blank and y != prev:
                s.tokens.append(y)
                s.token_frames.append(len(s.frames) - 1)
            prev = y

    def all_log_probs(self, s: ContractStream) -> np.ndarray:
        if not s.log_probs:
            return np.zeros((0, self.spec.vocab_size), np.float32)
        return np.concatenate(s.log_probs, axis=0)

    def get_result(self, s: ContractStream) -> str:
        return self.spec.to_text(s.tokens)


class _ContractState:
    """Offset bookkeeping shared by the backends: `step` advances it by the chunk's frames."""

    spec: ContractSpec

    def offset(self, state) -> int:  # noqa: ANN001
        return int(state[0])


class OnnxContractBackend(_ContractState):
    """ONNX Runtime on the contract file, fed as sherpa-onnx feeds it: the host reference."""

    name = "onnx"

    def __init__(self, spec: ContractSpec, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.spec = spec
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads or 1
        so.inter_op_num_threads = 1
        self.sess = ort.InferenceSession(spec.path, so, providers=["CPUExecutionProvider"])
        self._names = [i.name for i in self.sess.get_inputs()]
        self._rcs = np.array([spec.cache], np.int64)

    def initial_state(self):  # noqa: ANN201
        s = self.spec.input_shapes()
        return (self.spec.cache, np.zeros(s["attn_cache"], np.float32),
                np.zeros(s["conv_cache"], np.float32))

    def step(self, state, x, mask):  # noqa: ANN001, ANN201
        offset, att, conv = state
        feed = dict(zip(self._names, (x, np.array([offset], np.int64), self._rcs, att, conv, mask),
                        strict=True))
        lp, att, conv = self.sess.run(None, feed)
        return lp[0], (offset + lp.shape[1], att, conv)


class TVMContractBackend(_ContractState):
    """A compiled contract artifact in this process; caches stay on the TVM device."""

    name = "tvm"

    def __init__(self, vm, dev, weights, manifest: dict) -> None:  # noqa: ANN001
        self.vm, self.dev, self.weights, self.manifest = vm, dev, weights, manifest
        self.spec = spec_from_manifest(manifest)
        self._main = vm["main"]
        self._bufs: dict[str, object] = {}

    def initial_state(self):  # noqa: ANN201
        import tvm

        s = self.spec.input_shapes()
        return (self.spec.cache, tvm.runtime.tensor(np.zeros(s["attn_cache"], np.float32), self.dev),
                tvm.runtime.tensor(np.zeros(s["conv_cache"], np.float32), self.dev))

    def _input(self, name: str, value: np.ndarray):  # noqa: ANN202
        import tvm

        buf = self._bufs.get(name)
        if buf is None:
            buf = self._bufs[name] = tvm.runtime.empty(value.shape, str(value.dtype), self.dev)
        return buf.copyfrom(np.ascontiguousarray(value))

    def _inputs(self, offset: int, att, conv, x, mask) -> list:  # noqa: ANN001
        """`main`'s inputs before the weights, on this backend's device."""
        return [self._input("x", x), self._input("offset", np.array([offset], np.int64)), att,
                conv, self._input("attn_mask", mask)]

    def step(self, state, x, mask):  # noqa: ANN001, ANN201
        offset, att, conv = state
        out = self._main(*self._inputs(offset, att, conv, x, mask), *self.weights)
        lp = out[0].numpy()
        return lp[0], (offset + lp.shape[1], out[1], out[2])


def spec_from_manifest(manifest: dict) -> ContractSpec:
    """The ContractSpec a contract artifact was built from (its tokens come along)."""
    m = manifest["model"]
    c = {k: v for k, v in m["contract"].items() if k not in ("inputs", "outputs")}
    return ContractSpec(**c, tokens=tuple(m["tokens"]))


def is_contract_manifest(manifest: dict) -> bool:
    return manifest.get("model", {}).get("kind") == "onnx-contract"


def transcribe_with_sherpa_loop(rec: ContractRecognizer, samples: np.ndarray) -> ContractStream:
    """The whole recording at once (sherpa-onnx's examples feed it so), then the tail."""
    s = rec.create_stream()
    s.accept_waveform(rec.spec.features["sample_rate"], samples)
    s.input_finished()
    while rec.is_ready(s):
        rec.decode_stream(s)
    return s
