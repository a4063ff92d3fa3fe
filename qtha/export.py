"""``python -m qtha.export <record.json | adapter.safetensors> --format peft|merged|qtha --out DIR``.

A trained run's adapter where the rest of a researcher's work lives:

* ``peft`` (LoRA, DoRA): ``adapter_config.json`` + ``adapter_model.safetensors`` in peft's keys and names, for
  ``PeftModel.from_pretrained(base, DIR)``; ``base_model_name_or_path`` is a folder transformers loads offline
  (the converted cache of the embedded GGUF model, a local model's folder) or the hub id;
* ``merged`` (LoRA, DoRA, QuanTA, QTHA's linear variants ``mpo`` / ``mpo_mlp``): a plain transformers model folder
  (weights, config, tokenizer) with the update added into the base weights, for
  ``AutoModelForCausalLM.from_pretrained(DIR)`` without qtha (and vLLM); QTHA with its QNN is refused, with why;
* ``qtha`` (any adapter): the folder :func:`qtha.load_adapter` attaches to a transformers model.

The tiny random model is not loadable by name, so ``peft`` and ``qtha`` exports of a tiny run carry it as
``DIR/base_model``. Everything is checked before the model loads; the folder is written beside its final name and
moved into place, so it is whole or absent, and an existing non-empty folder is never overwritten.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import lightning as L
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import save_file
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from qtha import offline
from qtha.adapters import AdapterMergeError, adapter_class, adapter_layers, adapter_state_dict, merge_adapters, unwrap_merged
from qtha.backbone import base_reference, check_model, load_backbone
from qtha.build import build_model
from qtha.errors import ConfigError
from qtha.interop.adapter_dir import CONFIG_FILE, WEIGHTS_FILE, describe, save_adapter_dir
from qtha.interop.peft_format import USE_DORA, peft_config, to_peft_state
from qtha.results import SEARCHED, atomic_write_text, find_record, finished_record

FORMATS = ("peft", "merged", "qtha")
BASE_DIR = "base_model"  # where a tiny run's random base model travels


def check_format(fmt: str, adapter: Any) -> None:
    """Whether ``adapter`` can be written as ``fmt`` (one-line error naming what can), before any model loads."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r} is unknown; allowed: {', '.join(FORMATS)}")
    if fmt == "peft" and adapter.name not in USE_DORA:
        raise ConfigError(f"--format peft holds LoRA and DoRA, not adapter={adapter.name}; allowed: --format qtha "
                          "(any adapter, attached by qtha.load_adapter) or --format merged (mergeable adapters)")
    if fmt == "merged" and not adapter_class(adapter.name).is_mergeable(adapter):
        variant = f" adapter.variant={adapter.variant}" if "variant" in adapter else ""
        raise ConfigError(f"adapter={adapter.name}{variant} cannot be merged: its Δ(x) is not linear in x (the QNN or "
                          "MLP branch), so no weight update equals it; allowed: --format qtha (attach it with "
                          "qtha.load_adapter), or a mergeable adapter (lora, dora, quanta, qtha variant mpo|mpo_mlp)")


def check_out(out: Path) -> Path:
    """A new or empty folder whose parent can be written (an export never replaces earlier work)."""
    out = out.expanduser().resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {str(out)!r} already exists and is not an empty folder; allowed: a new or empty "
                          "folder (an export never overwrites)")
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise ConfigError(f"--out {str(out)!r} cannot be created ({parent} is not a writable folder)")
    return out


# --------------------------------------------------------------------------- writers
def _base_name(cfg: DictConfig, tmp: Path, out: Path) -> Optional[str]:
    """The base model's name for the exported config; a tiny run's random base is saved beside the adapter (it
    is rebuilt from the run's seed, as :func:`qtha.build.build_model` built it)."""
    name = base_reference(cfg.model)
    if name is not None:
        return name
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    base, tokenizer = load_backbone(cfg.model)
    base.save_pretrained(tmp / BASE_DIR)
    tokenizer.save_pretrained(tmp / BASE_DIR)
    return str(out / BASE_DIR)


def _write_peft(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, cfg: DictConfig, tmp: Path, out: Path) -> None:
    wrapped = [name for name, _ in adapter_layers(model)]
    config = peft_config(cfg.adapter, wrapped, _base_name(cfg, tmp, out))
    save_file(to_peft_state(adapter_state_dict(model)), os.fspath(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
    atomic_write_text(tmp / CONFIG_FILE, json.dumps(config, indent=2) + "\n")


def _write_merged(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, cfg: DictConfig, tmp: Path, out: Path) -> None:
    try:
        merge_adapters(model, safe=True)
    except AdapterMergeError as exc:  # a diverged (non-finite) adapter: nothing is written
        raise ConfigError(f"cannot merge: {exc}") from None
    unwrap_merged(model)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)


def _write_qtha(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, cfg: DictConfig, tmp: Path, out: Path) -> None:
    wrapped = [name for name, _ in adapter_layers(model)]
    save_adapter_dir(model, tmp, describe(cfg.adapter, cfg.quantum, _base_name(cfg, tmp, out), wrapped))


WRITERS: dict[str, Callable[..., None]] = {"peft": _write_peft, "merged": _write_merged, "qtha": _write_qtha}


def export(target: str | os.PathLike[str], fmt: str, out: str | os.PathLike[str],
           results_dirs: Optional[Sequence[Path]] = None) -> Path:
    """Write the adapter of a finished run (its record, or the adapter file a record names) as ``fmt`` into ``out``;
    returns the folder."""
    record_file = find_record(Path(target), list(results_dirs or [Path(d) for d in SEARCHED]))
    record, adapter_path = finished_record(record_file)
    if adapter_path is None:
        raise ConfigError(f"record {record_file} trained no adapter (adapter={record.config['adapter']['name']}); "
                          "allowed: a run with trainable adapter weights")
    cfg = OmegaConf.create(record.config)
    check_format(fmt, cfg.adapter)
    final = check_out(Path(out))
    check_model(cfg.model, allow_hub=bool(cfg.allow_hub))
    if cfg.allow_hub:
        offline.allow_hub()
    model, tokenizer = build_model(cfg, adapter_path)
    model.eval()
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        WRITERS[fmt](model, tokenizer, cfg, tmp, final)
        if final.exists():
            final.rmdir()  # empty (checked above)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qtha.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("target", help="a run record (.json) or the adapter checkpoint (.safetensors) it names")
    parser.add_argument("--format", required=True, choices=FORMATS, help="peft | merged | qtha (see the module help)")
    parser.add_argument("--out", required=True, type=Path, help="a new or empty folder to write")
    parser.add_argument("--results-dir", action="append", type=Path,
                        help=f"where to look up a checkpoint's record (repeatable; default: {', '.join(SEARCHED)})")
    args = parser.parse_args(argv)
    try:
        folder = export(args.target, args.format, args.out, args.results_dir)
    except ConfigError as exc:
        print(f"qtha: error: {exc}", file=sys.stderr)
        return 2
    print(f"qtha: wrote {args.format} export to {folder}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
