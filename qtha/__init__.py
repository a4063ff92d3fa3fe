"""qtha: reproducible quantum-tensor hybrid fine-tuning of LLMs.

Importing the package sets the offline defaults (no hub, W&B offline) before any Hugging
Face library is imported; ``allow_hub=true`` or an explicit environment value opts out.
``qtha.load_adapter(model, folder)`` attaches a saved adapter (qtha's or peft's) to a transformers
model; it is imported on first use, so ``import qtha`` stays light for the command lines.
"""
from typing import Any

from qtha.offline import apply_offline_defaults

apply_offline_defaults()

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "load_adapter":
        from qtha.interop.adapter_dir import load_adapter

        return load_adapter
    raise AttributeError(f"module 'qtha' has no attribute {name!r}")
