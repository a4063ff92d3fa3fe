"""One training step (forward + backward + AdamW) per adapter: time, tokens/s, peak RSS, checkpoint size.

Why: an adapter is only worth its accuracy if a step costs about what LoRA's does. Every adapter runs
the same batch in the same precision as training (``qtha.trainer.resolve_precision``: bf16 autocast on
CPUs with native bf16), and every ratio is to LoRA measured in the same round-robin.

* ``--model NAME`` (default ``smollm2_135m``, the embedded GGUF): the whole LM, a fixed batch of random
  tokens (``--rows`` × ``--seq``) whose first half is masked out of the loss like a prompt.
* ``--shape NAME`` (e.g. ``qwen2_7b``): instead of a whole LM, one ``q_proj`` and one ``v_proj`` shaped
  like that model's (read off its meta-device architecture: no download), on ``--layer-tokens`` tokens —
  the ratio at the paper's scale. The input needs a gradient, as inside a network.

Adapters: none (no trainable parameter: forward + backward to the inputs, no optimiser — the floor every
adapter step pays), lora, dora, quanta, and qtha in each variant (full, mpo, mpo_mlp, mlp_qnn, qnn). All
models are built once (sharing the frozen base weights) and stepped round-robin after one warm-up step
each. Peak RSS comes from one child process per adapter that builds and steps once (its own VmHWM),
checkpoint bytes from :func:`qtha.adapters.save_adapter_file`, matmul FLOPs per step from torch's
``FlopCounterMode`` (the warm-up step): their ratio to LoRA's is the arithmetic floor of the time ratio.

    python benchmarks/step.py [--steps 5] [--model smollm2_135m | --shape qwen2_7b] [--threads N]
                              [--precision auto] [--quick] [--out results/benchmarks]
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from _common import (apply_quick, machine_line, contended, contention_note, load_average, md_table, peak_rss_mb, round_robin, run_info,
                     summarize, write_outputs)
from qtha.adapters import count_trainable, inject_adapters, save_adapter_file
from qtha.backbone import load_backbone, meta_model
from qtha.compose import compose_checked
from qtha.data.formatting import IGNORE_INDEX
from qtha.module import token_losses
from qtha.trainer import resolve_precision

QTHA_VARIANTS = ("full", "mpo", "mpo_mlp", "mlp_qnn", "qnn")
# benchmark name -> config overrides
ADAPTERS: dict[str, list[str]] = {
    "none": ["adapter=none"], "lora": ["adapter=lora"], "dora": ["adapter=dora"], "quanta": ["adapter=quanta"],
    **{f"qtha-{v}": ["adapter=qtha", f"adapter.variant={v}"] for v in QTHA_VARIANTS},
    "qtha-L1": ["adapter=qtha", "adapter.qnn_layers=1"],  # one QNN layer, against the authors' L = r
}
# step time / LoRA's: QTHA at the authors' depth and with one layer; QuanTA. One q_proj+v_proj pair of a
# 7B-shaped model (--shape), where the frozen layer dominates: QTHA no slower than LoRA.
STEP_LIMITS = {"qtha-full": 1.05, "qtha-L1": 1.05, "quanta": 1.3}
SHAPE_STEP_LIMITS = {"qtha-full": 1.0, "qtha-L1": 1.0, "quanta": 1.3}
CHECKPOINT_LIMIT = 1.1  # checkpoint bytes / (4 bytes × trainable parameters)
RSS_LIMIT = 1.10  # peak RSS / LoRA's
QUICK = {"steps": 2, "rows": 2, "seq": 32, "layer_tokens": 64}
SEED = 0

Step = Callable[[], None]


def _autocast(precision: str) -> Callable[[], contextlib.AbstractContextManager]:
    """The training precision as a context factory: bf16/fp16 autocast, or nothing for 32-bit."""
    dtypes = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}
    if precision in dtypes:
        return lambda: torch.autocast("cpu", dtype=dtypes[precision])
    if precision in ("32-true", "32"):
        return contextlib.nullcontext
    raise ValueError(f"precision={precision!r} is not benchmarked; allowed: auto, bf16-mixed, 16-mixed, 32-true")


def _shared_copy(module: nn.Module) -> nn.Module:
    """A structural copy whose parameters and buffers are the original tensors (frozen bases are shared)."""
    memo = {id(t): t for t in (*module.parameters(), *module.buffers())}
    return copy.deepcopy(module, memo)


class Bench:
    """What every adapter is stepped on: a frozen base (a whole LM or one q_proj/v_proj pair) and one batch."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.autocast = _autocast(resolve_precision(args.precision, "cpu"))
        gen = torch.Generator().manual_seed(SEED)
        if args.shape:
            cfg = compose_checked([f"model={args.shape}"], needs_weights=False)
            meta = dict(meta_model(cfg.model).named_modules())
            layers = {k: next(m for n, m in meta.items() if n.endswith(f".{k}")) for k in ("q_proj", "v_proj")}
            self.base: nn.Module = nn.ModuleDict({k: nn.Linear(m.in_features, m.out_features, bias=m.bias is not None)
                                                 for k, m in layers.items()})
            self.shapes: Optional[dict[str, list[int]]] = {k: [m.in_features, m.out_features]
                                                           for k, m in layers.items()}
            self.x = torch.randn(args.layer_tokens, layers["q_proj"].in_features, generator=gen)
            self.n_tokens = args.layer_tokens
        else:
            cfg = compose_checked([f"model={args.model}"])
            self.base, _ = load_backbone(cfg.model)
            self.base.train()  # as in training (adapter dropout is 0 in every config benchmarked)
            ids = torch.randint(0, self.base.config.vocab_size, (args.rows, args.seq), generator=gen)
            labels = ids.clone()
            labels[:, : args.seq // 2] = IGNORE_INDEX  # the "prompt" half is not scored
            self.batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
            self.n_tokens = args.rows * args.seq
            self.shapes = None
        self.base.requires_grad_(False)

    def model(self, name: str) -> nn.Module:
        """A fresh adapter model for benchmark adapter ``name`` (sharing the frozen base weights)."""
        target = [f"model={self.args.shape or self.args.model}"]
        cfg = compose_checked([*target, *ADAPTERS[name]], needs_weights=not self.args.shape)
        model = _shared_copy(self.base)
        torch.manual_seed(SEED)
        inject_adapters(model, cfg.adapter, quantum=cfg.quantum)
        return model

    def _loss(self, model: nn.Module, to_inputs: bool) -> Tensor:
        if self.args.shape:
            x = self.x.requires_grad_(True)
            return sum(model[k](x).float().square().mean() for k in ("q_proj", "v_proj"))
        b = self.batch
        inputs = {"input_ids": b["input_ids"]}
        if to_inputs:  # no adapter: let the backward run down to the embeddings, as it does through adapters
            inputs = {"inputs_embeds": model.get_input_embeddings()(b["input_ids"]).detach().requires_grad_(True)}
        loss, mask = token_losses(model(attention_mask=b["attention_mask"], **inputs).logits, b["labels"])
        return (loss * mask).sum() / mask.sum()

    def step_fn(self, model: nn.Module) -> Step:
        """One training step: forward (under the training autocast) + backward + AdamW + zero_grad."""
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-4) if params else None

        def step() -> None:
            with self.autocast():
                loss = self._loss(model, opt is None)
            loss.backward()
            if opt is not None:
                opt.step()
                opt.zero_grad(set_to_none=True)
            if self.args.shape:
                self.x.grad = None

        return step


def step_flops(step: Step) -> int:
    """Matmul FLOPs of one step (forward, backward, optimiser), counted by torch: the arithmetic floor
    under the measured times (elementwise work and per-op overhead come on top)."""
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def checkpoint_bytes(model: nn.Module) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "adapter.safetensors"
        save_adapter_file(model, path)
        return path.stat().st_size


def own_peak_rss_mb() -> float:
    """This process's peak RSS. Linux: VmHWM of its own address space — ``ru_maxrss`` of an exec'd child
    starts at its parent's RSS at fork time, which would hide every child under the big timing process."""
    status = Path("/proc/self/status")
    if status.exists():
        match = re.search(r"VmHWM:\s+(\d+) kB", status.read_text())
        if match:
            return int(match.group(1)) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_peak_rss(name: str, script_args: Sequence[str]) -> float:
    """Peak RSS (MB) of a fresh process that builds adapter ``name`` and takes one step."""
    proc = subprocess.run([sys.executable, __file__, *script_args, "--rss-child", name],
                          capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"RSS child for {name} failed:\n{proc.stderr[-3000:]}")
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["peak_rss_mb"])


def _ratio(value: float, ref: Optional[float]) -> Optional[float]:
    return value / ref if ref else None


def evaluate(results: dict[str, dict], shape: bool = False) -> list[dict[str, Any]]:
    """The targets, each met or missed with its measured ratio."""
    lora = results["lora"]
    targets = []
    for name, limit in (SHAPE_STEP_LIMITS if shape else STEP_LIMITS).items():
        if name not in results:
            continue
        r = results[name]["step_ratio_to_lora"]
        targets.append({"target": f"{name} step ≤ {limit:g}× LoRA", "adapter": name, "ratio": r,
                        "limit": limit, "met": r <= limit, "flop_floor": results[name]["flop_ratio_to_lora"]})
    for name, r in results.items():
        if r["trainable_params"]:
            targets.append({"target": f"checkpoint ≤ {CHECKPOINT_LIMIT:g} × 4 B × trainable", "adapter": name,
                            "ratio": r["checkpoint_ratio"], "limit": CHECKPOINT_LIMIT,
                            "met": r["checkpoint_ratio"] <= CHECKPOINT_LIMIT})
    for name, r in results.items():
        if name != "lora":
            ratio = r["peak_rss_mb"] / lora["peak_rss_mb"]
            targets.append({"target": f"peak RSS ≤ LoRA's + {RSS_LIMIT - 1:.0%}", "adapter": name, "ratio": ratio,
                            "limit": RSS_LIMIT, "met": ratio <= RSS_LIMIT})
    return targets


def markdown(report: dict[str, Any]) -> str:
    cfg, env = report["config"], report["environment"]
    what = (f"one `q_proj` {cfg['shapes']['q_proj']} + `v_proj` {cfg['shapes']['v_proj']} shaped like "
            f"`{cfg['shape']}`, {cfg['n_tokens']} tokens" if cfg["shape"] else
            f"`{cfg['model']}`, batch {cfg['rows']} × {cfg['seq']} tokens (loss on the second half)")
    rows = []
    for name, r in report["results"].items():
        rows.append([name, f"{r['median_s']:.3g} [{r['iqr_s']:.2g}]", f"{r['tokens_per_s']:.0f}",
                     f"{r['step_ratio_to_lora']:.2f}", f"{r['flops'] / 1e9:.3g}", f"{r['flop_ratio_to_lora']:.3f}",
                     f"{r['trainable_params']:,}", f"{r['checkpoint_bytes']:,}",
                     f"{r['checkpoint_ratio']:.2f}" if r["trainable_params"] else "–",
                     f"{r['peak_rss_mb']:.0f}", f"{r['peak_rss_mb'] / report['results']['lora']['peak_rss_mb']:.3f}"])
    table = md_table(["adapter", "step (s) median [IQR]", "tokens/s", "step / LoRA", "GFLOP / step", "FLOP / LoRA",
                      "trainable", "checkpoint (B)",
                      "ckpt / (4 B × trainable)", "peak RSS (MB)", "RSS / LoRA"], rows)
    verdicts = [f"- {t['target']} ({t['adapter']}): **{'met' if t['met'] else 'missed'}** (ratio {t['ratio']:.3f}"
                + (f"; matmul-FLOP floor {t['flop_floor']:.3f})" if "flop_floor" in t else ")")
                for t in report["targets"]]
    lines = ["# One training step per adapter", "", *verdicts, ""]
    lines += contention_note(report, env["cpus_available"], "; the ratios come from interleaved steps")
    lines += [
        f"{what}; precision {cfg['precision']}; step = forward + backward + AdamW (none: forward + backward to "
        f"the inputs, no optimiser). Median [IQR] over {cfg['steps']} round-robin steps per adapter after one "
        "warm-up step each. GFLOP: matmul FLOPs of one step as torch counts them (the arithmetic floor of the "
        "step ratio). Peak RSS: a child process per adapter that builds it and steps once.",
        "",
        table,
        "",
        machine_line(report, cfg["threads"], ("torch", "transformers"), rss="peak RSS of the timing process"),
    ]
    return "\n".join(lines)


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=5, help="timed steps per adapter (round-robin)")
    p.add_argument("--model", default="smollm2_135m", help="model config whose whole LM is stepped")
    p.add_argument("--shape", default=None, help="model config whose q_proj/v_proj shapes are stepped alone "
                                                 "(e.g. qwen2_7b) instead of a whole LM")
    p.add_argument("--rows", type=int, default=4, help="batch rows (whole-LM mode)")
    p.add_argument("--seq", type=int, default=128, help="tokens per row (whole-LM mode)")
    p.add_argument("--layer-tokens", type=int, default=2048, help="tokens (--shape mode)")
    p.add_argument("--adapters", default=",".join(ADAPTERS), help="comma-separated subset of "
                                                                  f"{', '.join(ADAPTERS)} (lora is always run)")
    p.add_argument("--precision", default="auto", help="as trainer.precision: auto, bf16-mixed, 32-true")
    p.add_argument("--threads", type=int, default=None, help="torch threads (1 on a busy machine)")
    p.add_argument("--quick", action="store_true", help=f"tiny sizes for tests: {QUICK}")
    p.add_argument("--out", default="results/benchmarks",
                   help="directory for step.json/.md (step_<shape>.json/.md with --shape)")
    p.add_argument("--rss-child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    apply_quick(args, QUICK)
    names = [a for a in args.adapters.split(",") if a]
    if unknown := sorted(set(names) - set(ADAPTERS)):
        p.error(f"--adapters {unknown} unknown; allowed: {', '.join(ADAPTERS)}")
    args.adapters = list(dict.fromkeys(["lora", *names]))
    if min(args.steps, args.rows, args.seq, args.layer_tokens) < 1 or (args.threads is not None and args.threads < 1):
        p.error("--steps, --rows, --seq, --layer-tokens and --threads must be >= 1")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    script_args = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(script_args)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.rss_child:
        bench = Bench(args)
        bench.step_fn(bench.model(args.rss_child))()
        print(json.dumps({"peak_rss_mb": own_peak_rss_mb()}))
        return 0
    report = run_info([__file__, *script_args])
    t0 = time.perf_counter()
    bench = Bench(args)
    models = {name: bench.model(name) for name in args.adapters}
    steps = {name: bench.step_fn(m) for name, m in models.items()}
    flops = {name: step_flops(step) for name, step in steps.items()}  # doubles as the warm-up step
    times, _ = round_robin(steps, args.steps)
    samples = [load_average()]
    results: dict[str, dict] = {}
    for name, model in models.items():
        trainable = count_trainable(model)
        ckpt = checkpoint_bytes(model) if trainable else 0
        results[name] = {**summarize(times[name]), "times_s": times[name], "flops": flops[name],
                         "trainable_params": trainable,
                         "checkpoint_bytes": ckpt, "checkpoint_ratio": ckpt / (4 * trainable) if trainable else None}
        results[name]["tokens_per_s"] = bench.n_tokens / results[name]["median_s"]
    del models, steps
    for name in args.adapters:
        results[name]["peak_rss_mb"] = child_peak_rss(name, script_args)
        samples.append(load_average())
    for r in results.values():
        r["step_ratio_to_lora"] = _ratio(r["median_s"], results["lora"]["median_s"])
        r["flop_ratio_to_lora"] = _ratio(r["flops"], results["lora"]["flops"])
    threads = torch.get_num_threads()
    report.update(
        benchmark="step", schema_version=1,
        config={"model": None if args.shape else args.model, "shape": args.shape,
                "shapes": bench.shapes, "rows": args.rows, "seq": args.seq,
                "n_tokens": bench.n_tokens, "steps": args.steps, "adapters": args.adapters,
                "precision": resolve_precision(args.precision, "cpu"), "threads": threads, "quick": args.quick,
                "seed": SEED},
        load_average={"start": report.pop("load_average_start"), "samples": samples, "end": load_average()},
        wall_time_s=time.perf_counter() - t0, peak_rss_mb=peak_rss_mb(), results=results,
    )
    report["targets"] = evaluate(results, shape=bool(args.shape))
    report["contended"] = contended(report["load_average"]["start"], samples, threads)
    stem = f"step_{args.shape}" if args.shape else "step"
    json_path, md_path = write_outputs(args.out, stem, report, markdown(report))
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
