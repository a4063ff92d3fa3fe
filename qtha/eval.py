"""``python -m qtha.eval <record.json | adapter.safetensors> [key=value …] [--tag NAME]``.

Re-evaluates a trained adapter without retraining: rebuilds the run's model from its
record, loads the saved adapter weights, recomputes validation loss / perplexity and the
generation metrics, and appends the result to the record's ``evaluations`` list (the
original metrics stay untouched; the record is rewritten atomically). Overrides are dotted
keys applied to the recorded config — e.g. ``eval.limit=8``, ``eval.max_new_tokens=256``,
``data.test_size=64`` or a different quantum execution for the QNN branch, either a preset
of ``conf/quantum`` (``quantum=noisy_paper_low``, ``quantum=shots_1000``) or single keys
(``quantum.backend=pennylane quantum.device=default.mixed``). Keys that would change the
trained weights' shapes (``model.*``, ``adapter.*``) are refused.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from qtha import offline
from qtha.compose import CONF_DIR, group_options
from qtha.config import ConfigError, QuantumConfig, RunConfig, validate
from qtha.results import RunRecord, atomic_write_text, git_sha, load_record, predictions_path, versions

FROZEN_PREFIXES = ("model.", "adapter.")


def find_record(path: Path, results_dir: Path) -> Path:
    """The record itself, or the record whose ``adapter_path`` is this checkpoint."""
    if path.suffix == ".json":
        if not path.is_file():
            raise ConfigError(f"record {str(path)!r} does not exist; allowed: a results/runs/<experiment>/<key>.json")
        return path
    if not path.is_file():
        raise ConfigError(f"checkpoint {str(path)!r} does not exist; allowed: a record .json or an adapter "
                          ".safetensors written by a run")
    target = path.resolve()
    for candidate in sorted(results_dir.glob("runs/*/*.json")):
        try:
            saved = load_record(candidate).get("adapter_path")
        except (OSError, ValueError):
            continue
        if saved and Path(saved).resolve() == target:
            return candidate
    raise ConfigError(f"no record under {results_dir}/runs names adapter {str(path)!r}; allowed: pass the run's "
                      "record .json (it holds the config the adapter was trained with)")


def _parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not key=value")
    key, value = text.split("=", 1)
    if any(key.startswith(p) for p in FROZEN_PREFIXES):
        raise ConfigError(f"{key} cannot change at evaluation (the saved weights fix it); allowed: eval.*, "
                          "data.*, quantum=<preset>, quantum.*, trainer.precision, seed")
    return key, yaml.safe_load(value) if value else None


def _quantum_preset(name: Any) -> DictConfig:
    """``quantum=<name>``: the whole QNN execution from ``conf/quantum/<name>.yaml``, over the schema defaults."""
    allowed = group_options("quantum")
    if name not in allowed:
        raise ConfigError(f"quantum={name!r} is unknown; allowed: {', '.join(allowed)}")
    preset = yaml.safe_load((CONF_DIR / "quantum" / f"{name}.yaml").read_text(encoding="utf-8")) or {}
    preset.pop("defaults", None)
    return OmegaConf.merge(OmegaConf.structured(QuantumConfig), preset)


def build_config(record: dict[str, Any], overrides: list[str]) -> DictConfig:
    """The recorded config under the schema, with the evaluation overrides applied and validated."""
    cfg = OmegaConf.merge(OmegaConf.structured(RunConfig), record["config"])
    OmegaConf.set_struct(cfg, True)
    for text in overrides:
        key, value = _parse_override(text)
        if key == "quantum":
            cfg.quantum = _quantum_preset(value)
            continue
        try:
            OmegaConf.update(cfg, key, value, merge=True)
        except OmegaConfBaseException as exc:
            raise ConfigError(f"{text!r} does not apply: {' '.join(str(exc).split()[:12])}") from exc
    validate(cfg, trains=False)
    return cfg


def _tag(overrides: list[str], given: Optional[str]) -> str:
    text = given or ("__".join(sorted(overrides)) if overrides else "reeval")
    return re.sub(r"[^A-Za-z0-9_.=,+\-]", "-", text)[:120]


def reevaluate(record_file: Path, overrides: list[str], tag: Optional[str] = None) -> dict[str, Any]:
    """Load the adapter the record names, evaluate it, append the evaluation to the record."""
    record = load_record(record_file)
    if record.get("status") != "ok":
        raise ConfigError(f"record {record_file} has status={record.get('status')!r}; allowed: a finished run (ok)")
    cfg = build_config(record, overrides)
    adapter_path = record.get("adapter_path")
    if record.get("trainable_params", 0) > 0 and not (adapter_path and Path(adapter_path).is_file()):
        raise ConfigError(f"the adapter of {record_file} ({adapter_path!r}) is missing; allowed: a record whose "
                          "adapter file still exists (trainer.save_adapter=true)")
    if cfg.allow_hub:
        offline.allow_hub()
    metrics, preds = _evaluate(cfg, adapter_path if record.get("trainable_params", 0) > 0 else None)
    tag = _tag(overrides, tag)
    from qtha.evaluation import write_predictions

    entry = {"tag": tag, "overrides": overrides, "metrics": metrics, "git_sha": git_sha(), "versions": versions(),
             "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
             "predictions_path": str(write_predictions(predictions_path(record_file, tag), preds))}
    # Re-read just before writing: a concurrent evaluation of the same record must not be lost.
    latest = RunRecord(**load_record(record_file))
    latest.evaluations = [e for e in latest.evaluations if e.get("tag") != tag] + [entry]
    atomic_write_text(record_file, latest.to_json() + "\n")
    return entry


def _evaluate(cfg: DictConfig, adapter_path: Optional[str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    import lightning as L

    from qtha import adapters
    from qtha.backbone import load_backbone
    from qtha.data.module import ChatDataModule
    from qtha.evaluation import evaluate_generation
    from qtha.module import AdapterLM
    from qtha.train import resolve_precision

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    model, tokenizer = load_backbone(cfg.model)
    adapters.inject_adapters(model, cfg.adapter, quantum=cfg.quantum)
    if adapter_path:
        adapters.load_adapter(model, adapter_path, strict=True)
    data = ChatDataModule(cfg.data, tokenizer, cfg.seed, cfg.trainer.batch_size, cfg.trainer.num_workers)
    data.setup()
    precision = resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator)
    trainer = L.Trainer(accelerator=cfg.trainer.accelerator, devices=cfg.trainer.devices, precision=precision,
                        logger=False, enable_progress_bar=cfg.trainer.enable_progress_bar,
                        enable_model_summary=False, enable_checkpointing=False, default_root_dir=cfg.work_dir)
    losses = trainer.validate(AdapterLM(model, cfg.trainer), datamodule=data, verbose=False)[0]
    metrics: dict[str, Any] = {k.split("/")[-1]: v for k, v in losses.items()}
    if cfg.eval.enabled:
        gen_metrics, preds = evaluate_generation(model, tokenizer, data.test_rows, cfg.eval, cfg.data.max_length,
                                                 str(trainer.precision))
        metrics.update(gen_metrics)
    else:
        preds = []
    return metrics, preds


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qtha.eval", description=__doc__.split("\n\n")[0])
    parser.add_argument("target", help="a run record (.json) or the adapter checkpoint (.safetensors) it names")
    parser.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. eval.limit=8")
    parser.add_argument("--tag", help="name of this evaluation in the record (default: from the overrides)")
    parser.add_argument("--results-dir", default="results", help="where to look up a checkpoint's record")
    args = parser.parse_args(argv)
    try:
        record_file = find_record(Path(args.target), Path(args.results_dir))
        entry = reevaluate(record_file, args.overrides, args.tag)
    except ConfigError as exc:
        print(f"qtha: error: {exc}", file=sys.stderr)
        return 2
    shown = {k: v for k, v in entry["metrics"].items() if isinstance(v, (int, float))}
    print(f"qtha: {json.dumps({'record': str(record_file), 'tag': entry['tag'], **shown})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
