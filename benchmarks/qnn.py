"""QNN forward+backward: qtha's torch kernel against PennyLane's ``default.qubit`` and ``lightning.qubit``.

Why: the torch kernel is what makes QNN training affordable, and its claim (≥ 20× faster than
``default.qubit``) has to hold on the machine at hand, with the kernel still computing the same numbers.
Every contender is the real :class:`qtha.quantum.QNN` layer on the same inputs, weights and
cotangent: one call = forward over N tokens, loss = Σ outputs ⊙ cotangent, gradients w.r.t. the
inputs and the weights.

* torch kernel in float32 (the training default) and float64;
* ``default.qubit``, backprop, one broadcast call over the tokens, in float32 and in float64: every ratio
  sets the kernel against PennyLane at the **same** dtype;
* ``lightning.qubit``, adjoint, float64. PennyLane runs it one tape per token, so it is timed on the
  first ``--lightning-tokens`` tokens and extrapolated linearly to N (labelled as such).

For every (n_qubits, layers) all contenders are timed round-robin; each size reports median and IQR.
Agreement (‖a − b‖∞ / ‖b‖∞ of outputs, d/dinputs, d/dweights): float64 torch vs float64 ``default.qubit``
on all N tokens (gated at 1e-10) and vs ``lightning.qubit`` on the timed subset; float32 vs float32
``default.qubit`` is reported. Exit status 1 if a float64 agreement exceeds the tolerance.

    python benchmarks/qnn.py [--qubits 2,...,10] [--layers 1,2,3,4] [--tokens 4096] [--repeats 3]
                             [--lightning-tokens 16] [--threads N] [--quick] [--out results/benchmarks]
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor

from _common import (apply_quick, ints, machine_line, contended, contention_note, load_average, md_table, peak_rss_mb, round_robin, run_info,
                     summarize, write_outputs)
from qtha.quantum import QNN

F32, F64 = torch.float32, torch.float64
TARGET_RATIO = 20.0
TOLERANCE = 1e-10
ANSATZ = "qtha"
WARMUP_TOKENS = 8  # enough to build QNodes and caches; a full-size warm-up would double the cost of the big cells
# name -> (QNN keyword arguments, dtype)
CONTENDERS: dict[str, tuple[dict[str, Any], torch.dtype]] = {
    "torch32": ({"backend": "torch"}, F32),
    "torch64": ({"backend": "torch"}, F64),
    "default.qubit32": ({"backend": "pennylane", "device": "default.qubit", "diff_method": "backprop"}, F32),
    "default.qubit64": ({"backend": "pennylane", "device": "default.qubit", "diff_method": "backprop"}, F64),
    "lightning.qubit": ({"backend": "pennylane", "device": "lightning.qubit", "diff_method": "adjoint"}, F64),
}
TORCH = ("torch32", "torch64")
PAIRS = (("default.qubit32", "torch32"), ("default.qubit64", "torch64"))  # (PennyLane, kernel) at one dtype
TIMED = (*TORCH, "default.qubit32", "default.qubit64")
QUICK = {"qubits": [2, 3], "layers": [1, 2], "tokens": [16, 32], "repeats": 2, "lightning_tokens": 4}


Grads = tuple[Tensor, Tensor, Tensor]  # outputs, d/dinputs, d/dweights


def step(q: QNN, x: Tensor, ct: Tensor) -> Grads:
    """One forward+backward of the layer: loss = Σ q(x) ⊙ ct, gradients w.r.t. x and the weights."""
    xx = x.detach().requires_grad_(True)
    out = q(xx)
    gx, gw = torch.autograd.grad((out * ct).sum(), [xx, q.weights])
    return out.detach(), gx, gw


def rel_err(a: Sequence[Tensor], b: Sequence[Tensor]) -> dict[str, float]:
    """‖a − b‖∞ / ‖b‖∞ per quantity (normwise: entries near zero do not blow it up)."""
    return {k: float((u.double() - v).abs().max() / v.abs().max().clamp_min(1e-300))
            for k, u, v in zip(("outputs", "d_inputs", "d_weights"), a, b)}


def build(n: int, layers: int, weights: Tensor) -> dict[str, QNN]:
    mods = {}
    for name, (kwargs, dtype) in CONTENDERS.items():
        q = QNN(n, layers, ansatz=ANSATZ, dtype=dtype, **kwargs)
        with torch.no_grad():
            q.weights.copy_(weights)
        mods[name] = q
    return mods


def bench_cell(n: int, layers: int, tokens: Sequence[int], repeats: int, k_light: int,
               gen: torch.Generator) -> tuple[list[dict], list[dict]]:
    """Time every contender at every N for one (n_qubits, layers); (measurements, per-size results)."""
    n_max = max(tokens)
    x64 = (torch.rand(n_max, n, generator=gen, dtype=F64) * 2 - 1) * math.pi
    ct64 = torch.randn(n_max, n, generator=gen, dtype=F64)
    mods = build(n, layers, QNN(n, layers, ansatz=ANSATZ, dtype=F64).weights.detach())
    data = {dt: (x64.to(dt), ct64.to(dt)) for dt in (F32, F64)}

    def job(name: str, n_tok: int) -> Callable[[], Grads]:
        x, ct = data[CONTENDERS[name][1]]
        return lambda: step(mods[name], x[:n_tok], ct[:n_tok])

    jobs = {(name, N): job(name, N) for N in tokens for name in TIMED}
    jobs[("lightning.qubit", k_light)] = job("lightning.qubit", k_light)
    for name in CONTENDERS:  # warm-up: QNodes, plan materialisation, first-call allocations
        job(name, min(WARMUP_TOKENS, k_light))()
    times, last = round_robin(jobs, repeats)
    stats = {key: summarize(ts) for key, ts in times.items()}

    measurements = []
    for (name, N), ts in times.items():
        kwargs, dtype = CONTENDERS[name]
        measurements.append({"n_qubits": n, "n_layers": layers, "backend": name, "n_tokens": N,
                             "device": kwargs.get("device", "torch kernel"),
                             "diff_method": kwargs.get("diff_method", "autograd"),
                             "dtype": str(dtype).removeprefix("torch."), "times_s": ts, **stats[(name, N)]})
    light = stats[("lightning.qubit", k_light)]
    light_ref = step(mods["torch64"], data[F64][0][:k_light], data[F64][1][:k_light])
    light_err = rel_err(last[("lightning.qubit", k_light)], light_ref)
    results = []
    for N in tokens:
        med = {name: stats[(name, N)]["median_s"] for name in TIMED}
        iqr = {name: stats[(name, N)]["iqr_s"] for name in TIMED}
        med["lightning.qubit"], iqr["lightning.qubit"] = light["median_s"] * N / k_light, light["iqr_s"] * N / k_light
        ref64, ref32 = last[("default.qubit64", N)], last[("default.qubit32", N)]
        results.append({
            "n_qubits": n, "n_layers": layers, "n_tokens": N, "median_s": med, "iqr_s": iqr,
            "lightning_measured_tokens": k_light, "lightning_extrapolated": k_light < N,
            "ratio": {**{f"{slow}/{fast}": med[slow] / med[fast] for slow, fast in PAIRS},
                      "lightning.qubit/torch64": med["lightning.qubit"] / med["torch64"]},
            "agreement": {"torch64_vs_default.qubit64": rel_err(last[("torch64", N)], ref64),
                          "torch64_vs_lightning.qubit": light_err,
                          "torch32_vs_default.qubit32": rel_err(last[("torch32", N)], ref32)},
        })
    return measurements, results


def summary(results: list[dict]) -> dict[str, Any]:
    """The target (≥ 20× over default.qubit at every size, each kernel dtype against PennyLane at the same
    dtype) and the worst agreements."""
    ratios = [(r["ratio"][f"{slow}/{t}"], r, t) for r in results for slow, t in PAIRS]
    worst, at, kernel = min(ratios, key=lambda v: v[0])
    agree = {key: max(max(r["agreement"][key].values()) for r in results)
             for key in ("torch64_vs_default.qubit64", "torch64_vs_lightning.qubit", "torch32_vs_default.qubit32")}
    return {
        "target_ratio": TARGET_RATIO, "min_ratio": worst, "target_met": worst >= TARGET_RATIO,
        "min_ratio_by_kernel": {t: min(v for v, _, k in ratios if k == t) for t in TORCH},
        "min_ratio_at": {"n_qubits": at["n_qubits"], "n_layers": at["n_layers"], "n_tokens": at["n_tokens"],
                         "kernel": kernel},
        "tolerance": TOLERANCE, "max_rel_err": agree,
        "agreement_ok": max(agree["torch64_vs_default.qubit64"], agree["torch64_vs_lightning.qubit"]) <= TOLERANCE,
    }


def _s(v: float) -> str:
    return f"{v:.3g}"


def markdown(report: dict[str, Any]) -> str:
    s, env = report["summary"], report["environment"]
    at = s["min_ratio_at"]
    per_kernel = ", ".join(f"{k} {v:.1f}" for k, v in s["min_ratio_by_kernel"].items())
    rows = []
    for r in report["results"]:
        med, iqr, ratio, ag = r["median_s"], r["iqr_s"], r["ratio"], r["agreement"]
        cell = {k: f"{_s(med[k])} [{_s(iqr[k])}]" for k in med}
        if r["lightning_extrapolated"]:
            cell["lightning.qubit"] += f" (extrap. from {r['lightning_measured_tokens']})"
        rows.append([str(r["n_qubits"]), str(r["n_layers"]), str(r["n_tokens"]), cell["torch32"],
                     cell["default.qubit32"], f"{ratio['default.qubit32/torch32']:.1f}", cell["torch64"],
                     cell["default.qubit64"], f"{ratio['default.qubit64/torch64']:.1f}", cell["lightning.qubit"],
                     f"{ratio['lightning.qubit/torch64']:.1f}",
                     f"{max(ag['torch64_vs_default.qubit64'].values()):.1e}",
                     f"{max(ag['torch64_vs_lightning.qubit'].values()):.1e}",
                     f"{max(ag['torch32_vs_default.qubit32'].values()):.1e}"])
    table = md_table(["n", "L", "N", "torch f32 (s)", "dq f32 (s)", "dq32/t32", "torch f64 (s)", "dq f64 (s)",
                      "dq64/t64", "lightning f64 (s)", "lq/t64", "err64 dq", "err64 lq", "err32 dq"], rows)
    lines = [
        "# QNN forward+backward: torch kernel vs PennyLane",
        "",
        f"Target: torch kernel ≥ {TARGET_RATIO:g}× faster than default.qubit at the same dtype at every measured size: "
        f"**{'met' if s['target_met'] else 'missed'}** (min ratio {s['min_ratio']:.1f}, at n={at['n_qubits']}, "
        f"L={at['n_layers']}, N={at['n_tokens']}, {at['kernel']}; per kernel: {per_kernel}).",
        "",
        f"Agreement (float64, max ‖a − b‖∞/‖b‖∞ over outputs, d/dinputs, d/dweights; tolerance {TOLERANCE:g}): "
        f"torch vs default.qubit {s['max_rel_err']['torch64_vs_default.qubit64']:.1e}, "
        f"torch vs lightning.qubit {s['max_rel_err']['torch64_vs_lightning.qubit']:.1e} — "
        f"**{'ok' if s['agreement_ok'] else 'FAILED'}** (float32 kernel vs float32 default.qubit: "
        f"{s['max_rel_err']['torch32_vs_default.qubit32']:.1e}, not gated).",
        "",
    ]
    lines += contention_note(report, env["cpus_available"])
    lines += [
        f"Ansatz `{report['config']['ansatz']}`; one call = forward over N tokens + backward of "
        "Σ outputs ⊙ cotangent w.r.t. inputs and weights. Times: median [IQR] over "
        f"{report['config']['repeats']} interleaved repeats, seconds. dq = default.qubit (backprop, broadcast), "
        "in float32 and float64; lq = lightning.qubit (adjoint, float64, one tape per token: timed on the first "
        f"{report['config']['lightning_tokens']} tokens and extrapolated linearly to N); t32/t64 = torch kernel "
        "float32/float64; every ratio is at one dtype. err = agreement with the torch kernel at that dtype "
        "(lq: on the timed tokens).",
        "",
        table,
        "",
        machine_line(report, report["config"]["threads"], ("torch", "pennylane", "pennylane-lightning")),
    ]
    return "\n".join(lines)


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--qubits", type=ints, default=list(range(2, 11)), help="comma-separated n_qubits")
    p.add_argument("--layers", type=ints, default=[1, 2, 3, 4], help="comma-separated layer counts")
    p.add_argument("--tokens", type=ints, default=[4096], help="comma-separated token counts N")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per contender and size")
    p.add_argument("--lightning-tokens", type=int, default=16, help="tokens lightning.qubit is timed on")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch and lightning.qubit (default: as the environment sets them); "
                        "use 1 on a busy machine, where multithreaded OpenMP stalls")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help=f"tiny grid for tests: {QUICK}")
    p.add_argument("--out", default="results/benchmarks", help="directory for qnn.json and qnn.md")
    args = p.parse_args(argv)
    apply_quick(args, QUICK)
    if args.repeats < 1 or args.lightning_tokens < 1 or not (args.qubits and args.layers and args.tokens) \
            or min(args.tokens) < 1 or (args.threads is not None and args.threads < 1):
        p.error("--repeats, --lightning-tokens, --threads and every N must be >= 1; "
                "--qubits/--layers/--tokens non-empty")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    script_args = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(script_args)
    if args.threads is not None and os.environ.get("OMP_NUM_THREADS") != str(args.threads):
        # lightning.qubit's own OpenMP runtime reads OMP_NUM_THREADS once, when it loads: restart with it set
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
        os.execv(sys.executable, [sys.executable, __file__, *script_args])
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    report = run_info([__file__, *script_args])
    t0 = time.perf_counter()
    torch.manual_seed(args.seed)  # the QNN weights
    gen = torch.Generator().manual_seed(args.seed)
    k_light = min(args.lightning_tokens, *args.tokens)
    tokens = sorted(set(args.tokens))
    measurements, results, samples = [], [], []
    for n in args.qubits:
        for layers in args.layers:
            m, r = bench_cell(n, layers, tokens, args.repeats, k_light, gen)
            measurements += m
            results += r
            samples.append(load_average())
            worst = min(v["ratio"][f"{slow}/{t}"] for v in r for slow, t in PAIRS)
            print(f"n={n} L={layers}: dq/torch (same dtype) ≥ {worst:.1f}, load {samples[-1][0]}", file=sys.stderr,
                  flush=True)
    threads = torch.get_num_threads()
    report.update(
        benchmark="qnn", schema_version=2,
        config={"ansatz": ANSATZ, "qubits": args.qubits, "layers": args.layers, "tokens": tokens,
                "repeats": args.repeats, "lightning_tokens": k_light, "seed": args.seed, "quick": args.quick,
                "threads": threads,
                "warmup_tokens": WARMUP_TOKENS},
        load_average={"start": report.pop("load_average_start"), "samples": samples, "end": load_average()},
        wall_time_s=time.perf_counter() - t0, peak_rss_mb=peak_rss_mb(),
        measurements=measurements, results=results, summary=summary(results),
    )
    report["contended"] = contended(report["load_average"]["start"], samples, threads)
    json_path, md_path = write_outputs(args.out, "qnn", report, markdown(report))
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)
    print(markdown(report))
    return 0 if report["summary"]["agreement_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
