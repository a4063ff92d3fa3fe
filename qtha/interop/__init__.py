"""Interop with the tools PEFT researchers already use: adapter folders (qtha's for every method, peft's for
LoRA/DoRA, :mod:`qtha.interop.adapter_dir`) and peft's key and config format (:mod:`qtha.interop.peft_format`).
``qtha.export`` writes them from a run; :func:`qtha.load_adapter` reads them into any transformers causal LM."""
