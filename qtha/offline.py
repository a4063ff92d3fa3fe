"""Network policy: offline by default, so nothing blocks on a hub or a login prompt."""
from __future__ import annotations

import os
import sys

OFFLINE_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_EVALUATE_OFFLINE", "TRANSFORMERS_OFFLINE")


def apply_offline_defaults() -> None:
    """Offline unless the user's environment already says otherwise."""
    for var in OFFLINE_ENV:
        os.environ.setdefault(var, "1")
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def allow_hub() -> None:
    """Opt in to the Hugging Face hub for this process (``allow_hub=true``).

    huggingface_hub reads HF_HUB_OFFLINE at import time, so an already-imported module's
    constant is updated too.
    """
    for var in OFFLINE_ENV:
        os.environ[var] = "0"
    hub_constants = sys.modules.get("huggingface_hub.constants")
    if hub_constants is not None:
        hub_constants.HF_HUB_OFFLINE = False
