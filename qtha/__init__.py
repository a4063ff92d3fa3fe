"""qtha: reproducible quantum-tensor hybrid fine-tuning of LLMs.

Importing the package sets the offline defaults (no hub, W&B offline) before any Hugging
Face library is imported; ``allow_hub=true`` or an explicit environment value opts out.
"""
from qtha.offline import apply_offline_defaults

apply_offline_defaults()

__version__ = "0.1.0"
