"""The benchmark suites: what `tvm-conformer bench --suite NAME` measures (engines, threads,
recordings, rounds, and whether scaling and the analysis run)."""

from __future__ import annotations

from dataclasses import dataclass

from tvm_conformer.bench.engines import TVM_KINDS, EngineSpec


def _tvm_specs(kinds: tuple[str, ...], passes: tuple[bool, ...], precisions: tuple[str, ...]
               ) -> tuple[EngineSpec, ...]:
    return tuple(EngineSpec("tvm", tvm=k, passes=p, precision=pr) for k in kinds for p in passes
                 for pr in precisions if k != "untuned" or pr == "fp32")  # untuned: fp32 only


@dataclass(frozen=True)
class Suite:
    """What one `tvm-conformer bench --suite NAME` run measures."""

    name: str
    recordings: int
    rounds: int  # measured rounds, after one warm-up round
    threads: tuple[int, ...]
    stream: tuple[EngineSpec, ...]  # thread count filled in per group
    utterance: tuple[EngineSpec, ...] = ()
    scaling: bool = False  # latency against chunk size and model size
    analysis: bool = False  # roofline, kernel profile, MACs by component
    end_to_end: bool = False  # sherpa-onnx's recognizer beside tvm-conformer's (endtoend.py)


SUITES = {
    "quick": Suite("quick", recordings=2, rounds=2, threads=(1,),
                   stream=(EngineSpec("torch"), EngineSpec("ort"), EngineSpec("tvm", tvm="schedules"))),
    # the head-to-head of the ONNX Runtime issue: the streaming step, 1 and 2 threads, fp32 and
    # int8 (ONNX Runtime's quantize_dynamic of the same step against `--precision int8`)
    "versus": Suite("versus", recordings=6, rounds=4, threads=(1, 2),
                    stream=(EngineSpec("torch"), EngineSpec("ort"), EngineSpec("openvino"),
                            EngineSpec("tvm", tvm="schedules"), EngineSpec("tvm", tvm="tuned"),
                            EngineSpec("ort", precision="int8"),
                            EngineSpec("tvm", tvm="schedules", precision="int8")),
                    end_to_end=True),
    "full": Suite(
        "full", recordings=12, rounds=6, threads=(1, 2),
        stream=(EngineSpec("torch"), EngineSpec("torch.compile"), EngineSpec("ort"),
                EngineSpec("openvino"),
                *_tvm_specs(TVM_KINDS, (False, True), ("fp32", "fp16"))),
        utterance=(EngineSpec("torch", mode="utterance"), EngineSpec("ort", mode="utterance"),
                   EngineSpec("openvino", mode="utterance"),
                   EngineSpec("tvm", mode="utterance", tvm="schedules")),
        scaling=True, analysis=True,
    ),
    # one preset's engines in `bench --suite sizes` (bench/size_presets.py runs it per preset)
    "sizes": Suite("sizes", recordings=4, rounds=4, threads=(1, 2),
                   stream=(EngineSpec("torch"), EngineSpec("ort"), EngineSpec("openvino"),
                           EngineSpec("tvm", tvm="schedules"), EngineSpec("tvm", tvm="tuned"),
                           EngineSpec("ort", precision="int8"),
                           EngineSpec("tvm", tvm="schedules", precision="int8")),
                   utterance=(EngineSpec("ort", mode="utterance"),
                              EngineSpec("openvino", mode="utterance"),
                              EngineSpec("tvm", mode="utterance", tvm="schedules"))),
}
