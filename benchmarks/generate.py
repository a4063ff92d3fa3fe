"""Greedy generation as evaluation runs it: tokens/s and ms per decode step, qtha's path against plain ``generate``.

Why: a run's time goes into generating its test answers, and a decode step is a handful of small matmuls over
every weight of the LM — memory traffic and per-op overhead, not arithmetic. Every contender decodes the same
batch: the first ``--rows`` test conversations of the default experiment's data (``qtha.data.load_splits``),
rendered and left-padded as evaluation renders them, greedy with a KV cache, ``--new-tokens`` new tokens, in
the evaluation precision (``qtha.trainer.resolve_precision``: bf16 autocast on CPUs with native bf16).

* ``plain:<model>``: ``model.generate`` under that autocast, on the model as loaded — what evaluation ran before
  it had a fast path; ``plain:bare`` is the reference every ratio is taken to.
* ``qtha:<model>``: :func:`qtha.generation.generate`, the evaluation path.

Models: ``bare`` (the LM as loaded), ``lora`` (``conf/adapter/lora.yaml``, rank 4 on q_proj, v_proj) and ``qtha``
(``conf/adapter/qtha.yaml``), sharing the frozen base; every all-zero adapter tensor (LoRA's B, QTHA's last MPO
core) is drawn from N(0, 0.02²) so that no adapter is a no-op. Each qtha path must give exactly the plain path's
generations on the same model (exit status 1 otherwise).

    python benchmarks/generate.py [--model smollm2_135m] [--rows 8] [--new-tokens 64] [--repeats 3]
                                  [--precision auto] [--threads N] [--quick] [--out results/benchmarks]
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Callable, Optional, Sequence

import torch
from torch import nn

from _common import apply_quick, machine_line, contended, contention_note, load_average, md_table, peak_rss_mb, round_robin, run_info, \
    summarize, write_outputs
from step import _autocast, _shared_copy
from qtha.adapters import inject_adapters
from qtha.backbone import load_backbone
from qtha.compose import compose_checked
from qtha.data import load_splits
from qtha.generation import Generation, generate, left_pad, prompt_ids, to_generations
from qtha.trainer import resolve_precision

MODELS: dict[str, list[str]] = {"bare": [], "lora": ["adapter=lora"], "qtha": ["adapter=qtha"]}
PATHS = ("plain", "qtha")
REFERENCE = "plain:bare"
LORA_LIMIT = 1.0  # qtha:lora tokens/s ÷ plain:bare's, at least
QTHA_LIMIT = 0.9  # qtha:qtha tokens/s ÷ qtha:lora's, at least
NOISE_STD = 0.02
QUICK = {"model": "tiny_llama", "rows": 4, "new_tokens": 6, "repeats": 2}
SEED = 0

Run = Callable[[int], list[Generation]]  # max_new_tokens -> generations


class Bench:
    """The batch every contender decodes, and the models it decodes it with."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.precision = resolve_precision(args.precision, "cpu")
        self.autocast = _autocast(self.precision)
        cfg = compose_checked([f"model={args.model}"])
        torch.manual_seed(SEED)
        self.base, self.tokenizer = load_backbone(cfg.model)
        self.base.requires_grad_(False)
        test = load_splits(cfg.data)[1]
        if len(test) < args.rows:
            raise SystemExit(f"--rows {args.rows}: the test split of data={cfg.data.name} has {len(test)} rows")
        self.conversations = [r["messages"] for r in test[: args.rows]]
        self.max_prompt_length = cfg.data.max_length
        self.prompts = [prompt_ids(self.tokenizer, c, self.max_prompt_length) for c in self.conversations]

    def model(self, name: str) -> nn.Module:
        """Model ``name`` of :data:`MODELS`: the bare LM, or a copy sharing its frozen weights with an adapter
        whose all-zero tensors are drawn from N(0, NOISE_STD²)."""
        if name == "bare":
            return self.base
        cfg = compose_checked([f"model={self.args.model}", *MODELS[name]])
        model = _shared_copy(self.base)
        torch.manual_seed(SEED)
        inject_adapters(model, cfg.adapter, quantum=cfg.quantum)
        with torch.no_grad():
            for p in model.parameters():
                if p.requires_grad and not p.any():
                    p.normal_(0.0, NOISE_STD)
        return model.eval()

    def run(self, path: str, model: nn.Module) -> Run:
        """One call of ``path`` on ``model``: the whole batch, ``n`` new tokens."""
        tok = self.tokenizer
        if path == "qtha":
            return lambda n: generate(model, tok, self.conversations, max_new_tokens=n, batch_size=self.args.rows,
                                      max_prompt_length=self.max_prompt_length, precision=self.precision)

        def plain(n: int) -> list[Generation]:
            ids, mask = left_pad(self.prompts, tok.pad_token_id)
            with torch.no_grad(), self.autocast():
                seqs = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=n,
                                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
            return to_generations(seqs, ids.shape[1], self.prompts, tok, n)

        return plain


def cpu_timed(cpu: dict[str, list[float]], name: str, run: Run, n: int) -> Callable[[], list[Generation]]:
    """``run(n)``, appending the CPU seconds it took to ``cpu[name]``: on a shared machine the wall time also counts
    the time other jobs held the core, the CPU time much less so."""
    def job() -> list[Generation]:
        start = time.process_time()
        gens = run(n)
        cpu.setdefault(name, []).append(time.process_time() - start)
        return gens

    return job


def decode_steps(gens: Sequence[Generation], budget: int) -> int:
    """Decode steps the batch took: until its last row emitted EOS (that token counts), or the budget ran out."""
    return max(min(g.new_tokens + (not g.truncated), budget) for g in gens)


def results_of(times: dict[str, list[float]], cpu: dict[str, list[float]], last: dict[str, list[Generation]],
               args: argparse.Namespace, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per contender: wall and CPU time statistics, decode steps, tokens/s, ms per decode step, identity to plain."""
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        full, prefill = summarize(times[name]), summarize(times[f"{name}@1"])
        steps = decode_steps(last[name], args.new_tokens)
        r: dict[str, Any] = {**full, "times_s": times[name], "prefill_median_s": prefill["median_s"],
                             "prefill_times_s": times[f"{name}@1"], "decode_steps": steps,
                             "tokens_per_s": args.rows * steps / full["median_s"],
                             "decode_step_ms": (1000 * (full["median_s"] - prefill["median_s"]) / (steps - 1)
                                                if steps > 1 else None),
                             "mean_new_tokens": sum(g.new_tokens for g in last[name]) / len(last[name]),
                             "cpu_times_s": cpu[name], "cpu_median_s": summarize(cpu[name])["median_s"]}
        path, model = name.split(":")
        if path == "qtha":
            r["identical_to_plain"] = last[name] == last[f"plain:{model}"]
        results[name] = r
    ref = results[REFERENCE]["tokens_per_s"]
    ref_cpu = results[REFERENCE]["cpu_median_s"]
    for r in results.values():
        r["speed_vs_plain_bare"] = r["tokens_per_s"] / ref
        r["cpu_speed_vs_plain_bare"] = ref_cpu / r["cpu_median_s"]
    return results


def evaluate(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The two targets, each met or missed with its measured ratio."""
    pairs = (("LoRA", "qtha:lora", REFERENCE, LORA_LIMIT), ("QTHA", "qtha:qtha", "qtha:lora", QTHA_LIMIT))
    targets = []
    for label, name, ref, limit in pairs:
        ratio = results[name]["tokens_per_s"] / results[ref]["tokens_per_s"]
        targets.append({"target": f"{label} generation ≥ {limit:g}× {ref} tokens/s", "contender": name,
                        "reference": ref, "ratio": ratio, "limit": limit, "met": ratio >= limit})
    return targets


def markdown(report: dict[str, Any]) -> str:
    cfg, env = report["config"], report["environment"]
    rows = []
    for name, r in report["results"].items():
        same = {True: "yes", False: "**NO**"}.get(r.get("identical_to_plain"), "(reference)" if name.startswith(
            "plain") else "–")
        step = f"{r['decode_step_ms']:.1f}" if r["decode_step_ms"] is not None else "–"
        rows.append([name, f"{r['median_s']:.3g} [{r['iqr_s']:.2g}]", f"{r['prefill_median_s']:.3g}",
                     str(r["decode_steps"]), f"{r['tokens_per_s']:.1f}", step, f"{r['speed_vs_plain_bare']:.2f}",
                     f"{r['cpu_median_s']:.3g}", f"{r['cpu_speed_vs_plain_bare']:.2f}", same])
    table = md_table(["contender", "call (s) median [IQR]", "prefill (s)", "decode steps", "tokens/s",
                      "ms / decode step", "× plain:bare", "call CPU (s)", "× plain:bare by CPU time",
                      "same generations as plain"], rows)
    verdicts = [f"- {t['target']}: **{'met' if t['met'] else 'missed'}** (ratio {t['ratio']:.3f})"
                for t in report["targets"]]
    lines = ["# Greedy generation, as evaluation runs it", "", *verdicts,
             f"- qtha path gives the plain path's generations on every model: "
             f"**{'yes' if report['identical'] else 'NO'}**", ""]
    lines += contention_note(report, env["cpus_available"], "; the ratios come from interleaved calls")
    lines += [
        f"`{cfg['model']}`, {cfg['rows']} test conversations of the default data (prompt tokens "
        f"{min(cfg['prompt_tokens'])}–{max(cfg['prompt_tokens'])}, left-padded to one batch), greedy, "
        f"{cfg['new_tokens']} new tokens at most, precision {cfg['precision']}. `plain`: `model.generate` under "
        "the autocast on the model as loaded (evaluation before its fast path); `qtha`: `qtha.generation.generate`. "
        f"Median [IQR] over {cfg['repeats']} round-robin calls after one warm-up call each; prefill: the same "
        "call with one new token; ms / decode step = (call − prefill) / (decode steps − 1); tokens/s = rows × "
        "decode steps / call. CPU: the process's CPU seconds per call (median), less inflated than the wall time "
        "when other jobs share the cores; targets are taken on tokens/s.",
        "",
        table,
        "",
        machine_line(report, cfg["threads"], ("torch", "transformers")),
    ]
    return "\n".join(lines)


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2_135m", help="model config (the embedded GGUF by default)")
    p.add_argument("--rows", type=int, default=8, help="test conversations = the batch size")
    p.add_argument("--new-tokens", type=int, default=64, help="max_new_tokens")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per contender (round-robin)")
    p.add_argument("--precision", default="auto", help="as trainer.precision: auto, bf16-mixed, 32-true")
    p.add_argument("--threads", type=int, default=None, help="torch threads (1 on a busy machine)")
    p.add_argument("--quick", action="store_true", help=f"tiny sizes for tests: {QUICK}")
    p.add_argument("--out", default="results/benchmarks", help="directory for generate.json/.md")
    args = p.parse_args(argv)
    apply_quick(args, QUICK)
    if min(args.rows, args.new_tokens, args.repeats) < 1 or (args.threads is not None and args.threads < 1):
        p.error("--rows, --new-tokens, --repeats and --threads must be >= 1")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    script_args = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(script_args)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    report = run_info([__file__, *script_args])
    t0 = time.perf_counter()
    bench = Bench(args)
    models = {name: bench.model(name) for name in MODELS}
    names = [f"{path}:{m}" for m in MODELS for path in PATHS]
    runs = {name: bench.run(name.split(":")[0], models[name.split(":")[1]]) for name in names}
    for run in runs.values():
        run(2)  # warm-up
    cpu: dict[str, list[float]] = {}
    jobs = {**{name: cpu_timed(cpu, name, run, args.new_tokens) for name, run in runs.items()},
            **{f"{name}@1": cpu_timed(cpu, f"{name}@1", run, 1) for name, run in runs.items()}}
    times, last = round_robin(jobs, args.repeats)
    results = results_of(times, cpu, last, args, names)
    threads = torch.get_num_threads()
    report.update(
        benchmark="generate", schema_version=1,
        config={"model": args.model, "rows": args.rows, "new_tokens": args.new_tokens, "repeats": args.repeats,
                "precision": bench.precision, "threads": threads, "quick": args.quick, "seed": SEED,
                "noise_std": NOISE_STD, "max_prompt_length": bench.max_prompt_length,
                "prompt_tokens": [len(p) for p in bench.prompts], "contenders": names, "reference": REFERENCE},
        load_average={"start": report.pop("load_average_start"), "end": load_average()},
        wall_time_s=time.perf_counter() - t0, peak_rss_mb=peak_rss_mb(), results=results,
    )
    report["targets"] = evaluate(results)
    report["identical"] = all(r.get("identical_to_plain", True) for r in results.values())
    report["contended"] = contended(report["load_average"]["start"], [report["load_average"]["end"]], threads)
    json_path, md_path = write_outputs(args.out, "generate", report, markdown(report))
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)
    print(markdown(report))
    return 0 if report["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
