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


def cache_dir() -> Path:
    """The user's cache directory for compiled artifacts and the emulated board."""
    base = os.environ.get("TVM_CONFORMER_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "tvm-conformer"
    )
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path
