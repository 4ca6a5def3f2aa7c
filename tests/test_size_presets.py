"""bench/size_presets.py: the presets, the ratio to the best peer and the share of the physical limit;
bench/openvino_engine.py against ONNX Runtime on the same file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tvm_conformer.bench.size_presets import PRESETS, preset_checkpoint, size_rows, step_limit_ms
from tvm_conformer.errors import UserError

PEAK = {"peak_gflops": {"1": 100.0, "2": 200.0}, "copy_gbs": 20.0}


def _row(engine: str, threads: int, ms: float, label: str | None = None) -> dict:
    return {"label": label or engine, "engine": engine, "threads": threads, "status": "ok",
            "median_ms": ms, "max_abs_logp_diff": 1e-6, "transcripts_identical": True}


def test_presets_are_the_sizes_people_deploy():
    wenet, fast = PRESETS["wenet-u2pp"]["config"], PRESETS["fastconformer-l"]["config"]
    assert (wenet.d_model, wenet.n_heads, wenet.n_layers, wenet.d_model * wenet.ffn_ratio,
            wenet.conv_kernel, wenet.vocab_size) == (256, 4, 12, 2048, 15, 5000)
    assert (fast.d_model, fast.n_heads, fast.n_layers, fast.d_model * fast.ffn_ratio,
            fast.conv_kernel) == (512, 8, 17, 2048, 9)
    assert "4x" in PRESETS["fastconformer-l"]["note"]
    with pytest.raises(UserError, match="unknown size preset"):
        preset_checkpoint("conformer-xxl", Path("/nonexistent"))


def test_limit_is_the_slower_of_compute_and_traffic():
    # 1 GFLOP at 100 GFLOP/s = 10 ms; 100 MB at 20 GB/s = 5 ms
    assert step_limit_ms(1e9, 100e6, PEAK, 1) == pytest.approx(10.0)
    assert step_limit_ms(1e9, 100e6, PEAK, 2) == pytest.approx(5.0)  # compute halves, traffic ties
    assert step_limit_ms(1e9, 300e6, PEAK, 2) == pytest.approx(15.0)  # then traffic bounds


def test_rows_compare_with_the_faster_peer_at_each_thread_count():
    stream = [_row("ort", 1, 14.0), _row("openvino", 1, 12.0), _row("tvm", 1, 10.0, "tvm-schedules"),
              _row("ort", 2, 8.0), _row("openvino", 2, 11.0), _row("tvm", 2, 6.0, "tvm-schedules"),
              {"label": "tvm-tuned", "engine": "tvm", "threads": 1, "status": "n/a",
               "error": "no database"}]
    rows = {(r["label"], r["threads"]): r for r in size_rows(stream, 1e9, 100e6, PEAK)}
    assert rows["tvm-schedules", 1]["ratio_to_best_peer"] == pytest.approx(10 / 12)
    assert rows["tvm-schedules", 2]["ratio_to_best_peer"] == pytest.approx(6 / 8)
    assert rows["tvm-schedules", 1]["gflops"] == pytest.approx(100.0)
    assert rows["tvm-schedules", 1]["share_of_limit"] == pytest.approx(1.0)
    assert rows["openvino", 2]["share_of_limit"] == pytest.approx(5 / 11)
    assert rows["tvm-tuned", 1]["error"] == "no database" and "median_ms" not in rows["tvm-tuned", 1]



def test_int8_rows_compare_with_the_int8_peer_and_have_no_fp32_limit():
    """ONNX Runtime's int8 row is no fp32 peer (it would flatter every fp32 ratio), and the
    fp32 physical limit says nothing about an int8 step."""
    stream = [_row("ort", 1, 14.0), _row("openvino", 1, 12.0), _row("tvm", 1, 10.0, "tvm-schedules"),
              {**_row("ort", 1, 5.0, "ort+int8"), "precision": "int8"},
              {**_row("tvm", 1, 4.0, "tvm-schedules-int8"), "precision": "int8"}]
    rows = {(r["label"], r["threads"]): r for r in size_rows(stream, 1e9, 100e6, PEAK)}
    assert rows["tvm-schedules", 1]["ratio_to_best_peer"] == pytest.approx(10 / 12)
    assert rows["tvm-schedules-int8", 1]["ratio_to_best_peer"] == pytest.approx(4 / 5)
    assert rows["ort+int8", 1]["ratio_to_best_peer"] == pytest.approx(1.0)
    assert rows["tvm-schedules-int8", 1]["share_of_limit"] is None
    assert rows["tvm-schedules-int8", 1]["precision"] == "int8"

def test_the_table_has_the_full_utterance_forward_beside_the_step():
    """A preset's full-utterance rows (compute-only limit: min_bytes 0) in a table of their own."""
    from tvm_conformer.bench.size_presets import markdown

    stream = [_row("ort", 1, 14.0), _row("tvm", 1, 10.0, "tvm-schedules")]
    utt = [_row("ort", 1, 40.0), _row("openvino", 1, 50.0), _row("tvm", 1, 30.0, "tvm-schedules")]
    cfg = PRESETS["wenet-u2pp"]["config"].to_dict()
    rows = size_rows(utt, 2e9, 0, PEAK)
    assert {r["label"]: r["ratio_to_best_peer"] for r in rows}["tvm-schedules"] == pytest.approx(0.75)
    assert rows[2]["limit_ms"] == pytest.approx(20.0)  # 2 GFLOP at 100 GFLOP/s
    text = markdown({"peak": PEAK, "load_average_start": [0.1], "load_average_end": [0.2],
                     "presets": {"wenet-u2pp": {
                         "note": "n", "config": cfg, "flop_per_step": 1e9, "min_bytes_per_step": 1e8,
                         "load_average": [], "rows": size_rows(stream, 1e9, 1e8, PEAK),
                         "utterance_frames": 400, "flop_per_utterance": 2e9,
                         "utterance_rows": rows}}})
    table = text.split("Full-utterance forward (400 fbank frames")[1]
    assert "| tvm-schedules | 1 | 30.00 | 0.75 |" in table and "14.00" not in table


@pytest.mark.slow
def test_openvino_matches_onnx_runtime_on_the_step(tiny_checkpoint: Path, tmp_path: Path):
    from tvm_conformer.bench.engines import OrtEngine
    from tvm_conformer.bench.openvino_engine import OpenVinoEngine
    from tvm_conformer.frontend import export_onnx
    from tvm_conformer.model import load_checkpoint

    model, _ = load_checkpoint(tiny_checkpoint)
    path = tmp_path / "step.onnx"
    export_onnx(model, path)
    ort, ov = OrtEngine(str(path), 1), OpenVinoEngine(str(path), 1)
    cfg = model.cfg
    rng = np.random.default_rng(0)
    mask = np.ones((1, cfg.left_frames + cfg.chunk_size), np.float32)
    so, sv = ort.initial_state(), ov.initial_state()
    for _ in range(3):  # caches carried: the third step reads what the first two wrote
        feats = rng.standard_normal((1, cfg.chunk_input_frames, cfg.n_mels), dtype=np.float32)
        lo, so = ort.step(so, feats, mask)
        lv, sv = ov.step(sv, feats, mask)
        np.testing.assert_allclose(lv, lo, atol=1e-4)
        np.testing.assert_allclose(sv[0], so[0], atol=1e-4)
