"""Network policy: offline by default, so nothing blocks on a hub or a login prompt."""
from __future__ import annotations

import functools
import os
import socket
import sys
import threading
from typing import Optional
from urllib.parse import urlparse

OFFLINE_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_EVALUATE_OFFLINE", "TRANSFORMERS_OFFLINE")
HUB_TIMEOUT_S = 5.0  # one connection attempt before any model loads; huggingface_hub's own retries took ~55 s


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


@functools.lru_cache(maxsize=None)
def hub_unreachable(timeout_s: float = HUB_TIMEOUT_S) -> Optional[str]:
    """Why the hub's endpoint cannot be reached (None when it can): one TCP connection, look-up included, bounded
    by ``timeout_s`` (a thread, since name look-ups ignore socket timeouts). Asked once per process."""
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    address = (url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80))
    outcome: list[Optional[str]] = []

    def connect() -> None:
        try:
            socket.create_connection(address, timeout=timeout_s).close()
            outcome.append(None)
        except OSError as exc:
            outcome.append(str(exc) or type(exc).__name__)

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout_s)
    reason = outcome[0] if outcome else f"no answer within {timeout_s:g} s"
    return None if not reason else f"{address[0]}:{address[1]} cannot be reached ({reason})"
