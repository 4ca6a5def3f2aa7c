"""CTC + AED multitask training with dynamic chunk sizes, on CPU, in a time budget."""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import jiwer
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from tvm_conformer.data.dataset import load_split
from tvm_conformer.decode.ctc import ctc_greedy
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
    ys = [torch.tensor(tok.encode(items[i][1])) for i in idx]
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


def train(cfg: TrainConfig) -> dict:
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    torch.set_num_threads(cfg.threads)
    tok = CharTokenizer()
    train_items = load_split(cfg.data_dir, "train")
    valid_items = load_split(cfg.data_dir, "valid")
    mcfg = ModelConfig(**{"subsampling": cfg.subsampling, "vocab_size": tok.vocab_size, **cfg.model})
    first_step = cfg.start_step or 0
    if cfg.init:
        model, init_meta = load_checkpoint(cfg.init)
        mcfg = model.cfg
        if cfg.start_step is None:
            first_step = (init_meta.get("history") or [{}])[-1].get("steps", 0)
    else:
        model = ConformerASR(mcfg)
        all_feats = np.concatenate([np.asarray(f, dtype=np.float32) for f, _, _ in train_items])
        model.encoder.feat_mean.copy_(torch.from_numpy(all_feats.mean(0)))
        model.encoder.feat_istd.copy_(torch.from_numpy(1.0 / (all_feats.std(0) + 1e-5)))
        del all_feats
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-3)
    lengths = [len(f) for f, _, _ in train_items]
    steps_per_epoch = len(_batches(lengths, cfg.batch_frames, random.Random(0)))

    def lr_at(step: int) -> float:
        warm = min(1.0, (step + 1) / cfg.warmup_steps)
        return cfg.lr * warm * min(1.0, math.sqrt(cfg.warmup_steps / (step + 1)))

    start = time.time()
    step, best_wer, history = first_step, math.inf, []
    out = Path(cfg.out or new_run_checkpoint(cfg.subsampling))
    out.parent.mkdir(parents=True, exist_ok=True)
    for epoch in range(cfg.max_epochs):
        model.train()
        bar = tqdm(_batches(lengths, cfg.batch_frames, rng), desc=f"epoch {epoch}", total=steps_per_epoch)
        total = 0.0
        for idx in bar:
            x, lens, ys = _collate(train_items, idx, tok)
            if cfg.spec_augment:
                x = _spec_augment(x, rng)
            chunk, left = rng.choice(cfg.chunk_choices), rng.choice(cfg.left_choices)
            lp, out_lens, enc = model(x, lens, chunk, left)
            target_lens = torch.tensor([len(y) for y in ys])
            ctc = F.ctc_loss(
                lp.transpose(0, 1), torch.cat(ys), out_lens, target_lens, blank=tok.blank,
                zero_infinity=True,
            )
            loss = cfg.ctc_weight * ctc
            if model.decoder is not None and cfg.ctc_weight < 1.0:
                loss = loss + (1 - cfg.ctc_weight) * _aed_loss(model, enc, out_lens, ys, tok, cfg.label_smoothing)
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            step += 1
            total += float(loss)
            bar.set_postfix(loss=f"{float(loss):.3f}", ctc=f"{float(ctc):.3f}")
            if (time.time() - start) / 60 > cfg.max_minutes:
                break
        wer = evaluate_wer(model, valid_items, tok)
        minutes = (time.time() - start) / 60
        history.append({"epoch": epoch, "steps": step, "loss": total / max(1, len(bar)), "valid_wer": wer, "minutes": minutes})
        print(json.dumps(history[-1]), flush=True)
        if wer < best_wer:
            best_wer = wer
            meta = {"train_config": {k: v for k, v in vars(cfg).items()}, "history": history,
                    "valid_wer": wer, "train_minutes": minutes}
            save_checkpoint(model, out, meta)
        if minutes > cfg.max_minutes:
            break
    return {"best_valid_wer": best_wer, "minutes": (time.time() - start) / 60, "steps": step, "history": history}
