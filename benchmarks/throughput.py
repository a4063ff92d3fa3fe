"""Training throughput before and after the throughput work: real tokens/s, padding share, and the step's
matmul rate as a fraction of the machine's matmul peak, measured in the same run.

Three arms, one LoRA model: ``before`` (random batches, LM head and fp32 cross-entropy at every position,
the adapter input cast to float32 and back under autocast: the training step as it was), ``random`` (random batches, the head only at scored positions, as
:class:`qtha.module.AdapterLM` now computes the loss) and ``length`` (``data.batching=length`` too).

Why: a right-padded batch computes its padding too, so the share of pad positions is throughput thrown
away; ``data.batching=length`` (:mod:`qtha.data.batching`) batches rows of similar length. Both arms train
LoRA on the training rows of the configured experiment (the default one unless overrides say otherwise:
``data=cpsycound`` reads ``../shared/data`` and is skipped, saying so, when that folder is absent), with the
run's own data module, batch size, max_length, precision and loss. Each arm steps a fixed, evenly spread
sample of its epoch-0 batches (both arms' epochs hold the same rows in the same number of batches), the
arms and a large matmul timed round-robin (``_common.round_robin``): load drift spreads over all three.

* **real tokens/s**: non-pad tokens of the timed steps / their seconds;
* **padding share**: pad positions / all positions, over the timed batches and over the whole epoch;
* **fraction of peak**: the timed steps' matmul FLOPs (torch's ``FlopCounterMode``, counted on each timed
  batch in an untimed pass, as ``step.py`` counts) per second, over the best rate of a
  ``--peak-size``³ matmul in the step's compute dtype (bf16 under bf16 autocast) at the same thread count.

    python benchmarks/throughput.py [overrides ...] [--steps 10] [--threads 1] [--quick] [--out results/benchmarks]
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import time
from typing import Any, Callable, Optional, Sequence
from unittest import mock

import torch
from omegaconf import DictConfig, OmegaConf

from _common import (machine_line, contended, contention_note, load_average, md_table, peak_rss_mb, round_robin, run_info,
                     summarize, write_outputs)
from step import _autocast, step_flops
from qtha.adapters import inject_adapters
from qtha.backbone import load_backbone
from qtha.compose import compose_checked, compose_job
from qtha.adapters.lora import LoRALayer
from qtha.data import FILE_DATASETS
from qtha.data.module import ChatDataModule
from qtha.errors import ConfigError
from qtha.module import AdapterLM
from qtha.trainer import resolve_precision

# (batching, the head at scored positions only and the branch input uncast — see LoRALayer.autocast_input)
ARMS = {"before": ("random", False), "random": ("random", True), "length": ("length", True)}
TARGET = 1.3  # real tokens/s of "length" over "before"
QUICK = {"overrides": ["model=tiny_llama", "data.size=48", "data.test_size=4", "data.pool_size=120",
                       "data.max_length=320"], "steps": 2, "peak_size": 256}
Batch = dict[str, torch.Tensor]


def compose(overrides: Sequence[str]) -> Optional[DictConfig]:
    """The experiment's config with LoRA; None when its data is a local slice that is not there."""
    args = ["adapter=lora", *overrides]
    data = compose_job(args).data
    dataset = FILE_DATASETS.get(data.name)
    if dataset is not None and not dataset.has_local(data):
        return None
    return compose_checked(args)


def spread(batches: list[Batch], k: int) -> list[Batch]:
    """``k`` batches evenly spaced through the epoch (its length mix, not the first few's)."""
    k = min(k, len(batches))
    return [batches[i * len(batches) // k] for i in range(k)]


def padding_share(batches: Sequence[Batch]) -> float:
    real = sum(int(b["attention_mask"].sum()) for b in batches)
    return 1 - real / sum(b["attention_mask"].numel() for b in batches)


class Arm:
    """One ``data.batching`` value: its epoch-0 batches and the training step over them, one batch per call."""

    def __init__(self, cfg: DictConfig, batching: str, tokenizer: Any, steps: int) -> None:
        data = ChatDataModule(OmegaConf.merge(cfg.data, {"batching": batching}), tokenizer, cfg.seed,
                              cfg.trainer.batch_size)
        data.setup()
        self.epoch = list(data.train_dataloader())
        self.timed = spread(self.epoch, steps)
        self.done = 0

    def next_batch(self) -> Batch:
        batch = self.timed[self.done % len(self.timed)]
        self.done += 1
        return batch


def step_fn(model: torch.nn.Module, cfg: DictConfig, precision: str, scored_only: bool) -> Callable[[Batch], None]:
    """One training step as the trainer takes it: the token-mean response loss of :class:`AdapterLM` under the
    training precision (``scored_only=False``: the LM head at every position and the adapter input cast up and
    back, as before), backward, gradient clipping, AdamW, zero_grad."""
    autocast = _autocast(precision)
    as_before = contextlib.nullcontext if scored_only else lambda: mock.patch.object(LoRALayer, "autocast_input", False)
    lm = AdapterLM(model, cfg.trainer)
    lm._keeps_logits = lm._keeps_logits and scored_only
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)

    def step(batch: Batch) -> None:
        with as_before(), autocast():
            loss, mask = lm(batch)
            mean = (loss * mask).sum() / mask.sum().clamp(min=1)
        mean.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def matmul_job(size: int, dtype: torch.dtype) -> tuple[Callable[[], None], int]:
    """A ``size``³ matmul in ``dtype`` and its FLOPs: the machine's matmul peak at this thread count."""
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(size, size, generator=gen).to(dtype) for _ in range(2))
    return (lambda: torch.mm(a, b)), 2 * size ** 3


def arm_result(arm: Arm, times: list[float], flops: list[int], peak: float) -> dict[str, Any]:
    real = sum(int(b["attention_mask"].sum()) for b in arm.timed)
    seconds = sum(times)
    rate = sum(flops) / seconds
    return {**summarize(times), "times_s": times, "steps": len(times),
            "widths": [list(b["input_ids"].shape) for b in arm.timed],
            "real_tokens": real, "positions": sum(b["input_ids"].numel() for b in arm.timed),
            "tokens_per_s": real / seconds, "padding_share": padding_share(arm.timed),
            "padding_share_epoch": padding_share(arm.epoch), "epoch_batches": len(arm.epoch),
            "flops": sum(flops), "matmul_flops_per_s": rate, "fraction_of_peak": rate / peak}


def markdown(report: dict[str, Any]) -> str:
    cfg, res, peak, env = report["config"], report["results"], report["peak"], report["environment"]
    rows = [[f"{arm} ({ARMS[arm][0]}{', scored positions, input uncast' if ARMS[arm][1] else ', every position, input cast'})",
             f"{r['padding_share_epoch']:.1%}", f"{r['padding_share']:.1%}", f"{r['tokens_per_s']:.1f}",
             f"{r['median_s']:.3f} [{r['iqr_s']:.3f}]", f"{r['matmul_flops_per_s'] / 1e9:.1f}",
             f"{r['fraction_of_peak']:.1%}"] for arm, r in res.items()]
    table = md_table(["arm (batching, LM head, adapter input under autocast)", "padding share (epoch)", "padding share (timed)", "real tokens/s",
                      "median step s [IQR]", "matmul GFLOP/s", "of peak"], rows)
    t = report["target"]
    lines = [
        "# Training throughput: before / scored-only head / length-grouped batches", "",
        *contention_note(report, env["cpus_available"], "; the ratio comes from interleaved steps"),
        f"After (length-grouped, scored positions) / before real tokens/s: **{t['ratio']:.2f}×** (target ≥ {t['target']:g}×: "
        f"**{'met' if t['met'] else 'missed'}**).", "",
        f"LoRA on {cfg['model']}, data={cfg['data']} ({cfg['rows']} training rows, max_length {cfg['max_length']}), "
        f"batch {cfg['batch_size']}, bucket_batches {cfg['bucket_batches']}, precision {cfg['precision']}; "
        f"{cfg['steps']} timed steps per arm over batches spread through epoch 0, round-robin with the peak "
        f"matmul. Peak: best of {len(peak['times_s'])} {peak['size']}³ {peak['dtype']} matmuls, "
        f"{peak['best_flops_per_s'] / 1e9:.1f} GFLOP/s (median {peak['median_flops_per_s'] / 1e9:.1f}).", "",
        table, "",
        machine_line(report, cfg["threads"], ("torch",)),
    ]
    return "\n".join(lines)


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("overrides", nargs="*", help="config overrides, as for python -m qtha.run (default: the default "
                                                "experiment)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per arm (round-robin)")
    p.add_argument("--peak-size", type=int, default=2048, help="matrix size of the peak matmul")
    p.add_argument("--threads", type=int, default=None, help="torch threads (1 on a busy machine)")
    p.add_argument("--quick", action="store_true", help=f"tiny model and data for tests: {QUICK}")
    p.add_argument("--out", default="results/benchmarks", help="directory for throughput.json/.md")
    args = p.parse_args(argv)
    if args.quick:
        args.overrides = [*QUICK["overrides"], *args.overrides]
        args.steps, args.peak_size = QUICK["steps"], QUICK["peak_size"]
    if min(args.steps, args.peak_size) < 1 or (args.threads is not None and args.threads < 1):
        p.error("--steps, --peak-size and --threads must be >= 1")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    script_args = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(script_args)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        cfg = compose(args.overrides)
    except ConfigError as exc:
        print(f"throughput: error: {exc}", file=sys.stderr)
        return 2
    if cfg is None:
        print(f"throughput: skipped: the data of {' '.join(args.overrides) or 'the default experiment'} is not "
              "here (no local slice; ../shared/data is absent); pass data.path=<folder>", file=sys.stderr)
        return 0
    report = run_info([__file__, *script_args])
    t0 = time.perf_counter()
    model, tokenizer = load_backbone(cfg.model)
    torch.manual_seed(cfg.seed)
    inject_adapters(model, cfg.adapter, quantum=cfg.quantum)
    model.train()
    precision = resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator)
    arms = {name: Arm(cfg, batching, tokenizer, args.steps) for name, (batching, _) in ARMS.items()}
    steps = {name: step_fn(model, cfg, precision, scored) for name, (_, scored) in ARMS.items()}
    # Untimed pass over every timed batch: its matmul FLOPs (they depend on the batch's shape only), and warm-up.
    flops = {name: [step_flops(lambda b=b, s=steps[name]: s(b)) for b in arm.timed] for name, arm in arms.items()}
    dtype = torch.bfloat16 if precision.startswith("bf16") else torch.float32
    matmul, matmul_flops = matmul_job(args.peak_size, dtype)
    matmul()
    jobs = {**{name: (lambda a=arm, s=steps[name]: s(a.next_batch())) for name, arm in arms.items()}, "peak": matmul}
    samples = [load_average()]
    times, _ = round_robin(jobs, len(next(iter(arms.values())).timed))
    samples.append(load_average())
    peak = {"size": args.peak_size, "dtype": str(dtype).removeprefix("torch."), "flops": matmul_flops,
            "times_s": times["peak"], "best_flops_per_s": matmul_flops / min(times["peak"]),
            "median_flops_per_s": matmul_flops / summarize(times["peak"])["median_s"]}
    results = {name: arm_result(arm, times[name], flops[name], peak["best_flops_per_s"]) for name, arm in arms.items()}
    ratio = results["length"]["tokens_per_s"] / results["before"]["tokens_per_s"]
    threads = torch.get_num_threads()
    report.update(
        benchmark="throughput", schema_version=1,
        config={"overrides": args.overrides, "model": cfg.model.name, "data": cfg.data.name,
                "rows": cfg.data.size, "max_length": cfg.data.max_length, "batch_size": cfg.trainer.batch_size,
                "bucket_batches": cfg.data.bucket_batches, "precision": precision, "steps": args.steps,
                "threads": threads, "quick": args.quick, "seed": cfg.seed},
        load_average={"start": report.pop("load_average_start"), "samples": samples, "end": load_average()},
        wall_time_s=time.perf_counter() - t0, peak_rss_mb=peak_rss_mb(), peak=peak, results=results,
        target={"ratio": ratio, "target": TARGET, "met": ratio >= TARGET},
    )
    report["contended"] = contended(report["load_average"]["start"], samples, threads)
    json_path, md_path = write_outputs(args.out, "throughput", report, markdown(report))
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
