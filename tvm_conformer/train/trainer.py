"""CTC + AED multitask training with dynamic chunk sizes, on CPU, in a time budget.

With `run_dir`, a run is resumable: every `save_minutes` (and when it stops) the whole state
(weights, optimizer, step, position in the epoch, random states, history) is written atomically
to `<run_dir>/last.pt`, the best checkpoint by validation WER to `<run_dir>/best.pt`, and one
JSON line per `log_every` steps to `<run_dir>/progress.jsonl`; `resume(run_dir)` continues the
run exactly where it stopped (bit-identical to an uninterrupted run), its time budget counting
the minutes already spent.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import jiwer
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from tvm_conformer.audio.features import check_fbank
from tvm_conformer.data.dataset import dataset_fbank, load_split
from tvm_conformer.data.open_corpus import easy_ids
from tvm_conformer.decode.ctc import ctc_greedy
from tvm_conformer.errors import UserError
from tvm_conformer.model import (
    CharTokenizer,
    ConformerASR,
    ModelConfig,
    load_checkpoint,
    save_checkpoint,
)
from tvm_conformer.paths import new_run_checkpoint


@dataclass
class TrainConfig:
    data_dir: str = "data"
    out: str = ""  # "": a new runs/<timestamp>/conformer_<subsampling>.pt
    subsampling: str = "dws"
    seed: int = 0
    threads: int = 2
    max_minutes: float = 25.0
    max_epochs: int = 100
    lr: float = 2e-3
    warmup_steps: int = 300
    batch_frames: int = 10000  # fbank frames per batch (padding included)
    ctc_weight: float = 0.7  # loss = w * CTC + (1 - w) * AED
    label_smoothing: float = 0.1
    # dynamic chunk training: each batch draws a chunk size (encoder frames; -1 = full context)
    chunk_choices: tuple[int, ...] = (4, 8, 16, 16, 32, -1)
    left_choices: tuple[int, ...] = (1, 2, 4, 4, -1)
    spec_augment: bool = True
    model: dict = field(default_factory=dict)  # ModelConfig overrides
    init: str | None = None  # continue from this checkpoint (weights and CMVN; fresh optimizer)
    # the learning-rate schedule resumes here; None: where `init` stopped (its last step), or 0
    start_step: int | None = None
    run_dir: str | None = None  # resumable run: last.pt, best.pt, progress.jsonl (module doc)
    save_minutes: float = 10.0  # how often last.pt is written
    valid_every: int | None = None  # also validate (and keep the best) every N steps
    log_every: int = 50  # steps per progress line
    max_steps: int | None = None  # stop after this many steps of this run (schedule step)
    bf16: bool = False  # bfloat16 autocast for the forward pass (CPU AMX/AVX-512-BF16)
    valid_each_epoch: bool = True  # validate at the end of every epoch
    # the first N steps draw their batches from the easy recordings only (open_corpus.easy_ids:
    # one sentence, clean or mildly noisy, little silence): CTC learns its alignments there
    # first, then the whole corpus (0: no curriculum)
    curriculum_steps: int = 0


def _batches(lengths: list[int], budget: int, rng: random.Random) -> list[list[int]]:
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    batches, cur, cur_max = [], [], 0
    for i in order:
        new_max = max(cur_max, lengths[i])
        if cur and new_max * (len(cur) + 1) > budget:
            batches.append(cur)
            cur, new_max = [], lengths[i]
        cur.append(i)
        cur_max = new_max
    if cur:
        batches.append(cur)
    rng.shuffle(batches)
    return batches


def _spec_augment(x: torch.Tensor, rng: random.Random) -> torch.Tensor:
    """Two frequency masks (<= 10 bins) and two time masks (<= 5% of frames) per utterance."""
    x = x.clone()
    b, t, f = x.shape
    for i in range(b):
        for _ in range(2):
            w = rng.randint(0, 10)
            s = rng.randint(0, f - w)
            x[i, :, s : s + w] = 0.0
            w = rng.randint(0, max(1, t // 20))
            s = rng.randint(0, max(0, t - w))
            x[i, s : s + w, :] = 0.0
    return x


def _collate(items, idx, tok: CharTokenizer):
    feats = [torch.from_numpy(np.asarray(items[i][0], dtype=np.float32)) for i in idx]
    lens = torch.tensor([f.shape[0] for f in feats])
    x = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)
    ys = [torch.tensor(tok.encode(items[i][1]), dtype=torch.long) for i in idx]
    return x, lens, ys


def _aed_loss(model: ConformerASR, enc, enc_lens, ys, tok: CharTokenizer, smoothing: float):
    sos = torch.tensor([tok.sos_eos])
    ys_in = torch.nn.utils.rnn.pad_sequence([torch.cat([sos, y]) for y in ys], True, tok.sos_eos)
    ys_out = torch.nn.utils.rnn.pad_sequence([torch.cat([y, sos]) for y in ys], True, -100)
    logits = model.decoder(enc, enc_lens, ys_in)
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), ys_out.reshape(-1), ignore_index=-100,
        label_smoothing=smoothing,
    )


@torch.no_grad()
def evaluate_wer(model: ConformerASR, items, tok: CharTokenizer, batch_frames: int = 40000) -> float:
    """Greedy CTC WER with the deployment chunk mask (what the streaming step computes)."""
    model.eval()
    hyps, refs = [], []
    for idx in _batches([len(f) for f, _, _ in items], batch_frames, random.Random(0)):
        x, lens, _ = _collate(items, idx, tok)
        lp, out_lens, _ = model(x, lens)
        for j, i in enumerate(idx):
            hyps.append(tok.decode(ctc_greedy(lp[j, : out_lens[j]].numpy())))
            refs.append(items[i][1])
    return jiwer.wer(refs, hyps)


def feature_floor(fbank: dict | None, lsb: float, seconds: float = 10.0) -> np.ndarray:
    """Per mel bin, the mean log-mel value of white noise of `lsb` int16 LSB (std) under the
    fbank options `fbank`: the floor `ModelConfig.feat_floor` sets (seeded, deterministic)."""
    from tvm_conformer.audio.features import SAMPLE_RATE, compute_fbank

    noise = np.random.default_rng(0).standard_normal(int(seconds * SAMPLE_RATE)) * lsb / 32768
    return compute_fbank(noise.astype(np.float32), fbank_opts=fbank).mean(0).astype(np.float32)


def _cmvn(items, floor: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean and inverse std of all training frames (raised to `floor`), in float64."""
    n, s1, s2 = 0, 0.0, 0.0
    for f, _, _ in items:
        x = np.asarray(f, dtype=np.float64)
        if floor is not None:
            x = np.maximum(x, floor)
        n, s1, s2 = n + len(x), s1 + x.sum(0), s2 + (x**2).sum(0)
    mean = s1 / n
    std = np.sqrt(np.maximum(s2 / n - mean**2, 0.0))
    return mean.astype(np.float32), (1.0 / (std + 1e-5)).astype(np.float32)


def _expected_train(data_dir: str) -> int:
    """Train recordings a dataset will hold when complete (its info.json; 0 if unknown)."""
    info = Path(data_dir) / "info.json"
    if not info.is_file():
        return 0
    return int((json.loads(info.read_text()).get("sizes") or [0])[0])


def _atomic_save(obj: object, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _save_best(model: ConformerASR, out: Path, meta: dict) -> None:
    save_checkpoint(model, out, meta)  # atomic


def _log(run_dir: Path | None, entry: dict) -> None:
    line = json.dumps(entry)
    print(line, flush=True)
    if run_dir is not None:
        with open(run_dir / "progress.jsonl", "a") as f:
            f.write(line + "\n")


def resume(run_dir: str | Path, max_minutes: float | None = None,
           max_steps: int | None = None) -> dict:
    """Continue the run in run_dir from its last.pt; `max_minutes` (total, including the
    minutes already spent) and `max_steps` override the saved budget."""
    last = Path(run_dir) / "last.pt"
    if not last.is_file():
        raise UserError(f"{last} not found: nothing to resume; start a run with "
                        f"`tvm-conformer train --run-dir {run_dir}`")
    state = torch.load(last, map_location="cpu", weights_only=False)
    cfg = TrainConfig(**state["train_config"])
    cfg.chunk_choices, cfg.left_choices = tuple(cfg.chunk_choices), tuple(cfg.left_choices)
    if max_minutes is not None:
        cfg.max_minutes = max_minutes
    if max_steps is not None:
        cfg.max_steps = max_steps
    cfg.run_dir = str(run_dir)
    return train(cfg, _state=state)


def train(cfg: TrainConfig, _state: dict | None = None) -> dict:
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    torch.set_num_threads(cfg.threads)
    tok = CharTokenizer()
    run_dir = Path(cfg.run_dir) if cfg.run_dir else None
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        if _state is None and (run_dir / "last.pt").exists():
            raise UserError(f"{run_dir} already holds a run: resume it with "
                            f"`tvm-conformer train --resume {run_dir}`, or pick another --run-dir")
    out = Path(cfg.out) if cfg.out else (
        run_dir / "best.pt" if run_dir is not None else new_run_checkpoint(cfg.subsampling))
    fbank = dataset_fbank(cfg.data_dir)
    expected = _expected_train(cfg.data_dir)
    train_items = load_split(cfg.data_dir, "train", np.float16)
    valid_items = load_split(cfg.data_dir, "valid", np.float16)
    mcfg = ModelConfig(**{"subsampling": cfg.subsampling, "vocab_size": tok.vocab_size,
                          "fbank": fbank, **cfg.model})
    first_step = cfg.start_step or 0
    if _state is not None:
        model = ConformerASR(ModelConfig(**_state["model_config"]))
        model.load_state_dict(_state["model"])
        mcfg = model.cfg
    elif cfg.init:
        model, init_meta = load_checkpoint(cfg.init)
        mcfg = model.cfg
        if cfg.start_step is None:
            first_step = (init_meta.get("history") or [{}])[-1].get("steps", 0)
    else:
        model = ConformerASR(mcfg)
        floor = None
        if mcfg.feat_floor > 0:
            floor = feature_floor(mcfg.fbank, mcfg.feat_floor)
            model.encoder.feat_floor.copy_(torch.from_numpy(floor))
        mean, istd = _cmvn(train_items, floor)
        model.encoder.feat_mean.copy_(torch.from_numpy(mean))
        model.encoder.feat_istd.copy_(torch.from_numpy(istd))
    if mcfg.fbank_options != check_fbank(fbank):
        raise UserError(f"{cfg.data_dir} has features computed with fbank options "
                        f"{check_fbank(fbank)}, the model was trained on {mcfg.fbank_options}: "
                        "continue on a dataset built with the model's options")
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-3)
    lengths = [len(f) for f, _, _ in train_items]

    def lr_at(step: int) -> float:
        warm = min(1.0, (step + 1) / cfg.warmup_steps)
        return cfg.lr * warm * min(1.0, math.sqrt(cfg.warmup_steps / (step + 1)))

    step, best_wer, history, spent = first_step, math.inf, [], 0.0
    epoch0, batch0, order, total, n_in_epoch = 0, 0, None, 0.0, 0
    curriculum = False  # the current epoch's batches are the curriculum's
    if _state is not None:
        opt.load_state_dict(_state["opt"])
        step, best_wer, history = _state["step"], _state["best_wer"], _state["history"]
        spent, epoch0, batch0 = _state["minutes"], _state["epoch"], _state["batch"]
        order, total, n_in_epoch = _state["order"], _state["epoch_loss"], _state["epoch_steps"]
        curriculum = _state.get("curriculum", False)
        rng.setstate(_state["py_rng"])
        torch.set_rng_state(_state["torch_rng"])
    run_start_step = step
    start = time.time() - spent * 60
    out.parent.mkdir(parents=True, exist_ok=True)
    last_save = time.time()
    autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if cfg.bf16
                else contextlib.nullcontext())

    def minutes() -> float:
        return (time.time() - start) / 60

    def save_state(epoch: int, batch: int, order_now: list) -> None:
        if run_dir is None:
            return
        _atomic_save({
            "train_config": asdict(cfg), "model_config": mcfg.to_dict(),
            "model": model.state_dict(), "opt": opt.state_dict(), "step": step,
            "best_wer": best_wer, "history": history, "minutes": minutes(), "epoch": epoch,
            "batch": batch, "order": order_now, "epoch_loss": total, "epoch_steps": n_in_epoch,
            "py_rng": rng.getstate(), "torch_rng": torch.get_rng_state(),
            "curriculum": curriculum,
        }, run_dir / "last.pt")

    def validate(epoch: int, loss: float) -> None:
        nonlocal best_wer
        wer = evaluate_wer(model, valid_items, tok)
        model.train()
        history.append({"epoch": epoch, "steps": step, "loss": loss, "valid_wer": wer,
                        "minutes": minutes()})
        _log(run_dir, {"event": "valid", **history[-1]})
        if wer < best_wer:
            best_wer = wer
            meta = {"train_config": asdict(cfg), "history": history, "valid_wer": wer,
                    "train_minutes": minutes()}
            _save_best(model, out, meta)

    def out_of_budget() -> bool:
        return minutes() > cfg.max_minutes or (
            cfg.max_steps is not None and step >= cfg.max_steps)

    stopped = False
    window, window_ctc, window_t, window_cpu = [], [], time.time(), time.process_time()
    for epoch in range(epoch0, cfg.max_epochs):
        model.train()
        if order is None and expected > len(train_items):  # the corpus is still being written
            grown = load_split(cfg.data_dir, "train", np.float16)
            if len(grown) > len(train_items):
                _log(run_dir, {"event": "data", "train_utterances": len(grown), "step": step})
                train_items, lengths = grown, [len(f) for f, _, _ in grown]
        if order is None:
            curriculum = step < cfg.curriculum_steps
            if curriculum:
                easy = easy_ids(cfg.data_dir)
                pick = [i for i, u in enumerate(train_items) if u[2] in easy]
                if not pick:
                    raise UserError(f"--curriculum-steps: {cfg.data_dir} has no easy recordings "
                                    "(its manifest lacks the open corpus's fields); use 0")
                order = [[pick[j] for j in b]
                         for b in _batches([lengths[i] for i in pick], cfg.batch_frames, rng)]
                _log(run_dir, {"event": "curriculum", "utterances": len(pick), "step": step})
            else:
                order = _batches(lengths, cfg.batch_frames, rng)
            total, n_in_epoch = 0.0, 0
        bar = tqdm(order[batch0:], desc=f"epoch {epoch}", total=len(order) - batch0,
                   disable=run_dir is not None and not sys.stderr.isatty())
        for b, idx in enumerate(bar, start=batch0):
            if curriculum and step >= cfg.curriculum_steps:  # on to the whole corpus
                break
            if out_of_budget():
                stopped = True
                validate(epoch, total / max(1, len(order)))  # partial epoch: loss not comparable
                save_state(epoch, b, order)
                break
            x, lens, ys = _collate(train_items, idx, tok)
            if cfg.spec_augment:
                x = _spec_augment(x, rng)
            chunk, left = rng.choice(cfg.chunk_choices), rng.choice(cfg.left_choices)
            with autocast:
                lp, out_lens, enc = model(x, lens, chunk, left)
                aed = None
                if model.decoder is not None and cfg.ctc_weight < 1.0:
                    aed = _aed_loss(model, enc, out_lens, ys, tok, cfg.label_smoothing)
            target_lens = torch.tensor([len(y) for y in ys])
            ctc = F.ctc_loss(
                lp.float().transpose(0, 1), torch.cat(ys), out_lens, target_lens,
                blank=tok.blank, zero_infinity=True,
            )
            loss = cfg.ctc_weight * ctc
            if aed is not None:
                loss = loss + (1 - cfg.ctc_weight) * aed.float()
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            step += 1
            n_in_epoch += 1
            total += loss.item()
            window.append(loss.item())
            window_ctc.append(ctc.item())
            bar.set_postfix(loss=f"{window[-1]:.3f}", ctc=f"{window_ctc[-1]:.3f}")
            if step % cfg.log_every == 0:
                now = time.time()
                _log(run_dir, {
                    "event": "train", "step": step, "epoch": epoch, "batch": b + 1,
                    "batches": len(order), "loss": round(sum(window) / len(window), 4),
                    "ctc": round(sum(window_ctc) / len(window_ctc), 4),
                    "lr": round(lr_at(step), 6), "minutes": round(minutes(), 2),
                    "sec_per_step": round((now - window_t) / len(window), 3),
                    "cpu_sec_per_step": round((time.process_time() - window_cpu) / len(window), 3),
                })
                window, window_ctc, window_t, window_cpu = [], [], now, time.process_time()
            if cfg.valid_every and step % cfg.valid_every == 0:
                validate(epoch, total / max(1, n_in_epoch))
            if time.time() - last_save > cfg.save_minutes * 60:
                save_state(epoch, b + 1, order)
                last_save = time.time()
        if stopped:
            break
        if cfg.valid_each_epoch:
            validate(epoch, total / max(1, len(order)))
        order, batch0 = None, 0
        save_state(epoch + 1, 0, None)
        last_save = time.time()
        if out_of_budget():
            break
    return {"best_valid_wer": best_wer, "minutes": minutes(), "steps": step,
            "run_steps": step - run_start_step, "history": history}
