"""Credentials never reach a file: records, predictions and tracker configs are scrubbed first."""
from __future__ import annotations

import logging
import os
import re
from typing import Any, Optional

REDACTED = "<redacted>"
CREDENTIAL_ENV = ("WANDB_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
# Env-style names (WANDB_API_KEY, HF_TOKEN, DB_PASSWORD) and config-style ones (logger.api_key, hf_token,
# password); not run_key, max_new_tokens or pad_token, which are no secrets.
_SECRET_NAME = re.compile(r"[A-Z0-9_]*(KEY|TOKEN|SECRET|PASSWORD|PASSWD)[A-Z0-9_]*"
                          r"|(?i:([\w.]*[_.])?(api_?key|access_?key|private_?key|secret(_?key)?|password|passwd"
                          r"|(hf|api|auth|access)_?token))")


def _secret_name(name: str) -> bool:
    return _SECRET_NAME.fullmatch(name.lstrip("+~")) is not None


def scrub(value: Any, secrets: Optional[list[str]] = None) -> Any:
    """``value`` with credentials redacted, so a record can be shared or committed as it is.

    Redacts what sits under a secret-looking name (a dict key, or the key of a ``key=value``
    override string) and, anywhere in any string, the value of a credential variable from the
    environment (``CREDENTIAL_ENV``): an API key pasted into an override or an error message.
    """
    if secrets is None:
        secrets = [v for v in (os.environ.get(k, "") for k in CREDENTIAL_ENV) if len(v) >= 8]
    if isinstance(value, dict):
        return {k: REDACTED if _secret_name(str(k)) and v is not None else scrub(v, secrets)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(v, secrets) for v in value]
    if not isinstance(value, str):
        return value
    name, eq, _ = value.partition("=")
    if eq and _secret_name(name):
        return f"{name}={REDACTED}"
    for secret in secrets:
        value = value.replace(secret, REDACTED)
    return value


class ScrubFilter(logging.Filter):
    """Scrubs every message a handler writes (Hydra's job log file included): a credential in an override can
    show up in a logged path or error."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = scrub(record.getMessage()), ()
        return True


def scrub_logs() -> None:
    """Put a :class:`ScrubFilter` on every handler of the root logger (once per handler)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, ScrubFilter) for f in handler.filters):
            handler.addFilter(ScrubFilter())
