"""Where the package keeps its shipped assets and its caches."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
ASSETS_DIR = PACKAGE_DIR / "assets"
REPO_DIR = PACKAGE_DIR.parent

DEFAULT_CHECKPOINT = ASSETS_DIR / "conformer_dws.pt"
VANILLA_CHECKPOINT = ASSETS_DIR / "conformer_vanilla.pt"
DEFAULT_RECORDING = ASSETS_DIR / "sample.wav"
TARGETS_DIR = REPO_DIR / "targets"
SCHEDULES_DIR = REPO_DIR / "schedules"
TUNING_LOGS_DIR = REPO_DIR / "tuning_logs"
RUNS_DIR = REPO_DIR / "runs"  # training runs (gitignored): `train` writes here unless told


def new_run_checkpoint(subsampling: str) -> Path:
    """`runs/<UTC timestamp>/conformer_<subsampling>.pt`, in a directory no other run uses."""
    import time

    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    for n in range(1000):
        run = RUNS_DIR / (stamp if n == 0 else f"{stamp}-{n}")
        try:
            run.mkdir(parents=True)
        except FileExistsError:
            continue
        return run / f"conformer_{subsampling}.pt"
    raise FileExistsError(f"no free run directory under {RUNS_DIR} for {stamp}")


def cache_dir() -> Path:
    """The user's cache directory for compiled artifacts and the emulated board."""
    base = os.environ.get("TVM_CONFORMER_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "tvm-conformer"
    )
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path
