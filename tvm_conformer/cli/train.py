"""`tvm-conformer train`: CTC + AED multitask training on the generated corpus."""

from __future__ import annotations

import argparse
import json

HELP = "Train the Conformer-CTC (CTC + attention-decoder loss) on a dataset from `make-data`."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="data", help="dataset directory written by make-data")
    p.add_argument("--out", help="checkpoint to write (default: a new runs/<timestamp>/"
                   "conformer_<subsampling>.pt; the shipped model only when named here)")
    p.add_argument("--subsampling", default="dws", choices=["dws", "vanilla"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-minutes", type=float, default=25.0, help="time budget")
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
    from tvm_conformer.train.trainer import TrainConfig, train

    out = args.out or str(new_run_checkpoint(args.subsampling))
    cfg = TrainConfig(
        data_dir=args.data, out=out, subsampling=args.subsampling, seed=args.seed,
        threads=args.threads, max_minutes=args.max_minutes, max_epochs=args.max_epochs,
        ctc_weight=args.ctc_weight, lr=args.lr, model=json.loads(args.model_config), init=args.init, start_step=args.start_step,
        chunk_choices=_ints(args.chunk_choices), left_choices=_ints(args.left_choices),
    )
    print(f"writing the checkpoint to {out}", flush=True)
    result = train(cfg)
    print(json.dumps({k: v for k, v in result.items() if k != "history"}))
    return 0
