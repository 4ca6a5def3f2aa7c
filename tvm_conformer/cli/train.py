"""`tvm-conformer train`: CTC + AED multitask training on the generated corpus."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "Train the Conformer-CTC (CTC + attention-decoder loss) on a dataset from `make-data`."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="data", help="dataset directory written by make-data")
    p.add_argument("--out", default=None,
                   help="best checkpoint to write (default: RUN_DIR/best.pt with --run-dir, else "
                        "a new runs/<timestamp>/conformer_<subsampling>.pt; the shipped model "
                        "only when named here)")
    p.add_argument("--run-dir", help="resumable run: last.pt every --save-minutes, best.pt, "
                                      "progress.jsonl (keep it outside the work tree)")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue the run in RUN_DIR where it stopped (its own settings; "
                        "--max-minutes, if given, replaces its total budget)")
    p.add_argument("--save-minutes", type=float, default=10.0, help="last.pt interval")
    p.add_argument("--valid-every", type=int, default=None,
                   help="validate (and keep the best) every N steps instead of every epoch")
    p.add_argument("--max-steps", type=int, default=None, help="stop at this schedule step")
    p.add_argument("--log-every", type=int, default=50, help="steps per progress line")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the forward pass")
    p.add_argument("--batch-frames", type=int, default=10000, help="fbank frames per batch")
    p.add_argument("--warmup-steps", type=int, default=300)
    p.add_argument("--curriculum-steps", type=int, default=0,
                   help="the first N steps train on the easy recordings only (one sentence, "
                   "no reverberation, SNR >= 10 dB, little silence; open corpus manifests)")
    p.add_argument("--subsampling", default="dws", choices=["dws", "vanilla"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-minutes", type=float, default=None,
                   help="time budget, minutes (default 25; with --resume: the run's own)")
    p.add_argument("--max-epochs", type=int, default=100)
    p.add_argument("--ctc-weight", type=float, default=0.7, help="loss = w*CTC + (1-w)*AED")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--init", help="continue from this checkpoint (fresh optimizer)")
    p.add_argument("--start-step", type=int, default=None,
                   help="LR schedule step to start at (default: with --init, the step the "
                        "checkpoint was saved at; else 0)")
    p.add_argument("--chunk-choices", default="4,8,16,16,32,-1",
                   help="dynamic chunk training: chunk sizes drawn per batch (-1 = full context)")
    p.add_argument("--left-choices", default="1,2,4,4,-1", help="left chunks drawn per batch (-1 = all)")
    p.add_argument("--model-config", default="{}",
                   help='JSON overrides of ModelConfig, e.g. \'{"n_layers": 4}\'')


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def run(args: argparse.Namespace) -> int:
    from tvm_conformer.paths import new_run_checkpoint
    from tvm_conformer.train.trainer import TrainConfig, resume, train

    if args.resume:
        result = resume(args.resume, max_minutes=args.max_minutes, max_steps=args.max_steps)
        print(json.dumps({k: v for k, v in result.items() if k != "history"}))
        return 0
    out = args.out or (None if args.run_dir else str(new_run_checkpoint(args.subsampling)))
    cfg = TrainConfig(
        data_dir=args.data, out=out, subsampling=args.subsampling, seed=args.seed,
        threads=args.threads, max_minutes=25.0 if args.max_minutes is None else args.max_minutes,
        max_epochs=args.max_epochs, ctc_weight=args.ctc_weight, lr=args.lr,
        model=json.loads(args.model_config), init=args.init, start_step=args.start_step,
        chunk_choices=_ints(args.chunk_choices), left_choices=_ints(args.left_choices),
        run_dir=args.run_dir, save_minutes=args.save_minutes, valid_every=args.valid_every,
        max_steps=args.max_steps, bf16=args.bf16, log_every=args.log_every, batch_frames=args.batch_frames,
        warmup_steps=args.warmup_steps, valid_each_epoch=args.valid_every is None,
        curriculum_steps=args.curriculum_steps,
    )
    print(f"writing the checkpoint to {out or Path(args.run_dir) / 'best.pt'}", flush=True)
    result = train(cfg)
    print(json.dumps({k: v for k, v in result.items() if k != "history"}))
    return 0
