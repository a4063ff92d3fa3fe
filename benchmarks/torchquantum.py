"""QNN forward+backward: qtha's torch kernel against TorchQuantum, the simulator the authors' code uses.

Why: the authors (``Quantum-enhanced-LLM/QLLM-peft``, ``qpeft_vqc.py``, class ``VQC``, backend
``torchquantum``) simulate the QTHA circuit with TorchQuantum, gate by gate on a ``tq.QuantumDevice``
whose batch is the tokens. This measures what qtha's kernel buys over that simulator on the same circuit,
weights, token angles and cotangent, and checks first that both compute the same numbers.

* ``qtha``: :class:`qtha.quantum.QNN` (ansatz ``qtha``, ``backend="torch"``), float32 and float64;
* ``tq``: :class:`AuthorsVQC`, the authors' layer rebuilt gate for gate (GeneralEncoder RY re-upload,
  one trainable ``tq.CRZ`` / ``tq.RY`` module per angle, applied in their order, ``MeasureMultipleTimes``
  Pauli-Z readout), complex64 (TorchQuantum's only precision) and complex128 (see :func:`tq_precision`).

One call = forward over N tokens + gradients of Σ outputs ⊙ cotangent w.r.t. the token angles and the
weights. TorchQuantum keeps ~4 state vectors per gate for autograd (5·n·L gates), more than this machine
has at n = 10, L = 4, N = 4096, so it runs the N tokens in chunks that fit ``--tq-memory-gb`` (each a full
forward + backward, gradients summed; the chunk is in the table). Agreement (float64, ‖a − b‖∞/‖b‖∞ of
outputs, d/dinputs, d/dweights, on all N tokens) is checked before a size is timed: beyond the tolerance
the run stops with exit status 1. Then, per dtype, both contenders are timed round-robin.

Run with the benchmark-only environment's python (``benchmarks/torchquantum_env.sh``, default
``.tqenv`` in the checkout); qtha comes from this checkout:

    $TQ_VENV/bin/python benchmarks/torchquantum.py [--qubits 2,4,6,8,10] [--layers 1,2,4] [--tokens 4096]
        [--repeats 3] [--tq-memory-gb 3] [--threads N] [--quick] [--out results/benchmarks] [--check-env]
"""
from __future__ import annotations

import argparse
import contextlib
import enum
import importlib.util
import json
import math
import os
import sys
import time
import types
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# This file is named like the library: its folder goes to the END of sys.path, so that `import torchquantum`
# finds TorchQuantum and `import _common` still finds the sibling helpers; qtha comes from this checkout.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != HERE] + [str(HERE)]

import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from _common import (apply_quick, ints, machine_line, contended, contention_note, load_average, md_table, peak_rss_mb, round_robin,  # noqa: E402
                     run_info, summarize, write_outputs)
from qnn import rel_err, step  # noqa: E402
from qtha.quantum import QNN  # noqa: E402

F32, F64 = torch.float32, torch.float64
DTYPES = {"32": F32, "64": F64}
TOLERANCE = 1e-10  # float64 vs float64; complex64 anywhere in TorchQuantum's path would show as ~1e-7
ANSATZ = "qtha"
STATES_PER_GATE = 2.5  # state vectors TorchQuantum's autograd keeps per gate (1.9–2.3 measured here)
TQ_DISTS = ("torchquantum-ng", "torchquantum", "torchpack", "qiskit", "qiskit-aer", "qiskit-ibm-runtime", "torchvision")
QUICK = {"qubits": [2, 3], "layers": [1, 2], "tokens": [16, 32], "repeats": 2}
Grads = tuple[Tensor, Tensor, Tensor]  # outputs, d/dinputs, d/dweights


def _torchvision_shim() -> None:
    """Stand-ins for the four torchvision names TorchQuantum's dataset loaders import at import time.

    PyPI's only Linux torchvision wheels are CUDA builds, which cannot load next to the CPU torch pin
    (``operator torchvision::nms does not exist``); the benchmark-only env therefore has no torchvision, and
    ``torchquantum.dataset`` (MNIST/CIFAR/Vowel loaders, unused here) gets these names, which fail if called.
    """
    def unavailable(*_a: Any, **_k: Any) -> None:
        raise RuntimeError("torchvision is not installed in this benchmark-only environment")

    tv, datasets, utils, transforms = (types.ModuleType(f"torchvision{s}")
                                       for s in ("", ".datasets", ".datasets.utils", ".transforms"))
    transforms.InterpolationMode = enum.Enum("InterpolationMode", {"NEAREST": "nearest", "BILINEAR": "bilinear",
                                                                  "BICUBIC": "bicubic"})
    datasets.VisionDataset = type("VisionDataset", (), {"__init__": unavailable})
    utils.download_url = unavailable
    tv.datasets, tv.transforms, datasets.utils = datasets, transforms, utils
    sys.modules.update({m.__name__: m for m in (tv, datasets, utils, transforms)})


TORCHVISION_SHIM = importlib.util.find_spec("torchvision") is None
try:
    if TORCHVISION_SHIM:
        _torchvision_shim()
    import torchquantum as tq
except ImportError as exc:
    sys.exit(f"torchquantum is not importable here ({exc}): run this with the python of the benchmark-only "
             "environment that benchmarks/torchquantum_env.sh builds (default .tqenv in the checkout)")


@contextlib.contextmanager
def tq_precision(dtype: torch.dtype) -> Iterator[None]:
    """TorchQuantum in complex128 for the duration (process-wide); float32: as it is.

    TorchQuantum has no precision option: ``torchquantum.macro.C_DTYPE = complex64`` (and ``F_DTYPE``) is
    copied into every module's namespace at import, every gate matrix and state is cast to it, and the
    observables' eigenvalues are complex64 class constants. Rebinding those names and constants is the only
    way to run it in double precision; the float64 agreement at ~1e-15 shows nothing stayed complex64.
    """
    if dtype == F32:
        yield
        return
    saved: list[tuple[Any, str, Any]] = []
    for name, mod in list(sys.modules.items()):
        if name == "torchquantum" or name.startswith("torchquantum."):
            for attr, wide in (("C_DTYPE", torch.complex128), ("F_DTYPE", torch.float64)):
                if attr in vars(mod):
                    saved.append((mod, attr, getattr(mod, attr)))
                    setattr(mod, attr, wide)
    for cls in (tq.I, tq.op_name_dict["z"]):  # MeasureMultipleTimes' observables
        for attr in ("eigvals", "matrix"):
            val = vars(cls).get(attr)
            if isinstance(val, Tensor):
                saved.append((cls, attr, val))
                setattr(cls, attr, val.to(torch.complex128))
    try:
        yield
    finally:
        for obj, attr, val in reversed(saved):
            setattr(obj, attr, val)


class AuthorsVQC(tq.QuantumModule):
    """QLLM-peft's ``VQC`` (backend ``torchquantum``), rebuilt: qtha's ``qtha`` ansatz as the authors run it.

    Per layer k: ``tq.GeneralEncoder`` RY(u_i) on every wire; CRZ control i → target (i+1) mod n for
    i = n−1…0; trainable RY; CRZ i → (i−1) mod n for i = n−1, 0…n−2; trainable RY; then ⟨Z_i⟩ on every wire
    (``MeasureMultipleTimes``). Each angle is its own ``tq.CRZ``/``tq.RY`` module with a (1, 1) parameter,
    as theirs; ``roles[j][i + k·n]`` holds qtha's ``weights[k, j, i]``. Wires: TorchQuantum's state axes run
    wire 0 first, like PennyLane's, and the readout is per wire, so no reordering is needed.
    """

    def __init__(self, n_wires: int, n_layers: int) -> None:
        super().__init__()
        self.n_wires, self.n_layers = n_wires, n_layers
        self.encoder = tq.GeneralEncoder([{"input_idx": [i], "func": "ry", "wires": [i]}
                                          for i in range(n_wires)])
        self.roles = nn.ModuleList(
            tq.QuantumModuleList(gate(has_params=True, trainable=True) for _ in range(n_wires * n_layers))
            for gate in (tq.CRZ, tq.RY, tq.CRZ, tq.RY))
        self.measure = tq.MeasureMultipleTimes([{"wires": range(n_wires), "observables": ["z"] * n_wires}])
        self.dev = tq.QuantumDevice(n_wires=n_wires)

    @tq.static_support
    def forward(self, x: Tensor) -> Tensor:
        n, dev = self.n_wires, self.dev
        crz1, ry1, crz2, ry2 = self.roles
        dev.reset_states(x.shape[0])
        for k in range(self.n_layers):
            self.encoder(dev, x)
            for i in range(n - 1, -1, -1):
                crz1[i + k * n](dev, wires=[i, (i + 1) % n])
            for i in range(n):
                ry1[i + k * n](dev, wires=i)
            for i in [n - 1, *range(n - 1)]:
                crz2[i + k * n](dev, wires=[i, (i - 1) % n])
            for i in range(n):
                ry2[i + k * n](dev, wires=i)
        return self.measure(dev)

    def angles(self) -> list[Tensor]:
        """The gate parameters in qtha's weight order (role, layer, wire), flattened."""
        n, L = self.n_wires, self.n_layers
        return [role[i + k * n].params for role in self.roles for k in range(L) for i in range(n)]

    def load(self, weights: Tensor) -> None:
        """Set the gate angles from qtha's (L, 4, n) weight tensor."""
        with torch.no_grad():
            for p, w in zip(self.angles(), weights.permute(1, 0, 2).reshape(-1)):
                p.copy_(w.reshape(1, 1))

    def as_weights(self, flat: Sequence[Tensor]) -> Tensor:
        """Per-angle tensors in :meth:`angles` order → qtha's (L, 4, n) layout."""
        return torch.stack([t.reshape(()) for t in flat]).view(4, self.n_layers, self.n_wires).permute(1, 0, 2)


def tq_chunk(n: int, layers: int, n_tokens: int, dtype: torch.dtype, budget_gb: float) -> int:
    """Tokens per TorchQuantum forward+backward so that its autograd graph fits ``budget_gb``."""
    itemsize = torch.empty((), dtype=torch.complex128 if dtype == F64 else torch.complex64).element_size()
    per_token = STATES_PER_GATE * 5 * n * layers * 2 ** n * itemsize
    return max(1, min(n_tokens, int(budget_gb * 2 ** 30 // per_token)))


def tq_step(vqc: AuthorsVQC, x: Tensor, ct: Tensor, chunk: int) -> Grads:
    """:func:`qnn.step` for TorchQuantum, over the tokens in chunks of ``chunk`` (gradients summed)."""
    outs, gxs, gw = [], [], None
    for s in range(0, len(x), chunk):
        xx = x[s:s + chunk].detach().requires_grad_(True)
        out = vqc(xx)
        gx, *ga = torch.autograd.grad((out * ct[s:s + chunk]).sum(), [xx, *vqc.angles()])
        outs.append(out.detach())
        gxs.append(gx)
        g = vqc.as_weights(ga)
        gw = g if gw is None else gw + g
    return torch.cat(outs), torch.cat(gxs), gw


def bench_cell(n: int, layers: int, tokens: Sequence[int], repeats: int, budget_gb: float,
               gen: torch.Generator) -> tuple[list[dict], list[dict]]:
    """Check, then time, both contenders at every N for one (n_qubits, layers); (measurements, results)."""
    n_max = max(tokens)
    x64 = (torch.rand(n_max, n, generator=gen, dtype=F64) * 2 - 1) * math.pi
    ct64 = torch.randn(n_max, n, generator=gen, dtype=F64)
    w64 = QNN(n, layers, ansatz=ANSATZ, dtype=F64).weights.detach()
    ref: dict[int, Grads] = {}
    stats: dict[tuple[str, int], dict] = {}
    agreement: dict[int, dict[str, dict[str, float]]] = {N: {} for N in tokens}
    chunks: dict[str, dict[int, int]] = {}
    measurements = []
    for tag in ("64", "32"):  # float64 first: its results are the reference for both dtypes
        dtype = DTYPES[tag]
        x, ct = x64.to(dtype), ct64.to(dtype)
        with tq_precision(dtype):
            q = QNN(n, layers, ansatz=ANSATZ, backend="torch", dtype=dtype)
            with torch.no_grad():
                q.weights.copy_(w64)
            vqc = AuthorsVQC(n, layers)
            vqc.load(w64.to(dtype))
            chunks[tag] = {N: tq_chunk(n, layers, N, dtype, budget_gb) for N in tokens}
            jobs: dict[tuple[str, int], Callable[[], Grads]] = {}
            for N in tokens:
                xs, cts = x[:N], ct[:N]
                jobs[(f"qtha{tag}", N)] = lambda q=q, xs=xs, cts=cts: step(q, xs, cts)
                jobs[(f"tq{tag}", N)] = lambda v=vqc, xs=xs, cts=cts, c=chunks[tag][N]: tq_step(v, xs, cts, c)
            # warm-up = the agreement check: one full call of every job before any is timed
            first = {key: job() for key, job in jobs.items()}
            for N in tokens:
                if tag == "64":
                    ref[N] = first[("qtha64", N)]
                    agreement[N]["tq64_vs_qtha64"] = err = rel_err(first[("tq64", N)], ref[N])
                    if max(err.values()) > TOLERANCE:
                        sys.exit(f"TorchQuantum and qtha disagree at n={n}, L={layers}, N={N} (float64): {err} "
                                 f"> {TOLERANCE:g}; nothing timed")
                else:
                    agreement[N]["tq32_vs_qtha64"] = rel_err(first[("tq32", N)], ref[N])
                    agreement[N]["qtha32_vs_qtha64"] = rel_err(first[("qtha32", N)], ref[N])
            times, _ = round_robin(jobs, repeats)
        for (name, N), ts in times.items():
            stats[(name, N)] = summarize(ts)
            measurements.append({"n_qubits": n, "n_layers": layers, "backend": name, "n_tokens": N,
                                 "simulator": "torchquantum" if name.startswith("tq") else "qtha torch kernel",
                                 "dtype": str(dtype).removeprefix("torch."),
                                 "tq_chunk": chunks[tag][N] if name.startswith("tq") else None,
                                 "times_s": ts, **stats[(name, N)]})
    results = []
    for N in tokens:
        med = {k[0]: v["median_s"] for k, v in stats.items() if k[1] == N}
        iqr = {k[0]: v["iqr_s"] for k, v in stats.items() if k[1] == N}
        results.append({"n_qubits": n, "n_layers": layers, "n_tokens": N, "median_s": med, "iqr_s": iqr,
                        "ratio": {f"tq{t}/qtha{t}": med[f"tq{t}"] / med[f"qtha{t}"] for t in DTYPES},
                        "tq_chunk": {t: chunks[t][N] for t in DTYPES}, "agreement": agreement[N]})
    return measurements, results


def summary(results: list[dict]) -> dict[str, Any]:
    ratios = {key: [r["ratio"][key] for r in results] for key in results[0]["ratio"]}
    agree = {key: max(max(r["agreement"][key].values()) for r in results) for key in results[0]["agreement"]}
    return {
        "ratio_min": {k: min(v) for k, v in ratios.items()}, "ratio_max": {k: max(v) for k, v in ratios.items()},
        "ratio_geomean": {k: math.exp(sum(map(math.log, v)) / len(v)) for k, v in ratios.items()},
        "tolerance": TOLERANCE, "max_rel_err": agree, "agreement_ok": agree["tq64_vs_qtha64"] <= TOLERANCE,
    }


def tq_versions() -> dict[str, str]:
    """TorchQuantum and what it imports, or ``"absent"`` (torchvision: shimmed, see ``_torchvision_shim``)."""
    found = {}
    for dist in TQ_DISTS:
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = "absent"
    return found


def _s(v: float) -> str:
    return f"{v:.3g}"


def markdown(report: dict[str, Any]) -> str:
    s, env, cfg = report["summary"], report["environment"], report["config"]
    rows = []
    for r in report["results"]:
        med, iqr, ag = r["median_s"], r["iqr_s"], r["agreement"]
        cell = {k: f"{_s(med[k])} [{_s(iqr[k])}]" for k in med}
        chunk = "/".join(str(r["tq_chunk"][t]) for t in DTYPES)
        rows.append([str(r["n_qubits"]), str(r["n_layers"]), str(r["n_tokens"]), cell["qtha32"], cell["tq32"],
                     f"{r['ratio']['tq32/qtha32']:.1f}", cell["qtha64"], cell["tq64"],
                     f"{r['ratio']['tq64/qtha64']:.1f}", chunk, f"{max(ag['tq64_vs_qtha64'].values()):.1e}",
                     f"{max(ag['tq32_vs_qtha64'].values()):.1e}"])
    table = md_table(["n", "L", "N", "qtha f32 (s)", "tq c64 (s)", "tq/qtha f32", "qtha f64 (s)", "tq c128 (s)",
                      "tq/qtha f64", "tq chunk 32/64", "err f64", "err tq c64"], rows)
    ratio = ", ".join(f"{k} {s['ratio_min'][k]:.1f}–{s['ratio_max'][k]:.1f} "
                      f"(geomean {s['ratio_geomean'][k]:.1f})" for k in s["ratio_min"])
    lines = [
        "# QNN forward+backward: qtha's torch kernel vs TorchQuantum (the authors' simulator)",
        "",
        f"TorchQuantum / qtha time ratio over the grid: {ratio}.",
        "",
        f"Agreement before timing (float64, max ‖a − b‖∞/‖b‖∞ over outputs, d/dinputs, d/dweights, all N tokens; "
        f"tolerance {TOLERANCE:g}): TorchQuantum vs qtha {s['max_rel_err']['tq64_vs_qtha64']:.1e} — "
        f"**{'ok' if s['agreement_ok'] else 'FAILED'}** (float32 vs the float64 reference, not gated: TorchQuantum "
        f"{s['max_rel_err']['tq32_vs_qtha64']:.1e}, qtha {s['max_rel_err']['qtha32_vs_qtha64']:.1e}).",
        "",
    ]
    lines += contention_note(report, env["cpus_available"], "; the ratios, measured round-robin, are what count")
    lines += [
        f"Ansatz `{cfg['ansatz']}`; one call = forward over N tokens + backward of Σ outputs ⊙ cotangent w.r.t. "
        f"inputs and weights. Times: median [IQR] over {cfg['repeats']} interleaved repeats after one full "
        "warm-up call (the agreement check), seconds. qtha = `qtha.quantum.QNN(backend=\"torch\")`; tq = the "
        "authors' QLLM-peft `VQC` rebuilt on TorchQuantum (per-angle `tq.RY`/`tq.CRZ` modules, GeneralEncoder, "
        "MeasureMultipleTimes), complex64, or complex128 by rebinding TorchQuantum's hard-coded dtype. "
        f"tq chunk = tokens per TorchQuantum forward+backward (its autograd graph is kept under "
        f"{cfg['tq_memory_gb']:g} GB; gradients summed over chunks). err f64 = TorchQuantum vs qtha, float64; "
        "err tq c64 = TorchQuantum complex64 vs the float64 reference.",
        "",
        table,
        "",
        machine_line(report, cfg["threads"], ("torch", "torchquantum-ng", "qiskit", "qiskit-aer", "qiskit-ibm-runtime",
                                              "torchvision")),
    ]
    return "\n".join(lines)


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--qubits", type=ints, default=[2, 4, 6, 8, 10], help="comma-separated n_qubits (>= 2)")
    p.add_argument("--layers", type=ints, default=[1, 2, 4], help="comma-separated layer counts")
    p.add_argument("--tokens", type=ints, default=[4096], help="comma-separated token counts N")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per contender, dtype and size")
    p.add_argument("--tq-memory-gb", type=float, default=3.0,
                   help="TorchQuantum's autograd graph per chunk of tokens stays under this")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: as the environment sets them); use 1 on a busy machine")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help=f"tiny grid for tests: {QUICK}")
    p.add_argument("--out", default="results/benchmarks", help="directory for torchquantum.json and .md")
    p.add_argument("--check-env", action="store_true",
                   help="print torch / torchquantum / qiskit versions; exit 1 unless torch is a CPU build")
    args = p.parse_args(argv)
    apply_quick(args, QUICK)
    if args.repeats < 1 or args.tq_memory_gb <= 0 or not (args.qubits and args.layers and args.tokens) \
            or min(args.tokens) < 1 or min(args.layers) < 1 or (args.threads is not None and args.threads < 1):
        p.error("--repeats, --threads, every layer count and N must be >= 1, --tq-memory-gb > 0; "
                "--qubits/--layers/--tokens non-empty")
    if min(args.qubits) < 2:  # the authors' rings would be CRZ(0 → 0) at one qubit
        p.error("--qubits: every n_qubits must be >= 2 (the authors' CRZ rings need two wires)")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    script_args = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(script_args)
    if args.check_env:
        print(json.dumps({"torch": torch.__version__, "torch_cuda": torch.version.cuda, **tq_versions()}))
        return 0 if torch.version.cuda is None else 1
    if args.threads is not None:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
        torch.set_num_threads(args.threads)
    report = run_info([__file__, *script_args])
    report["versions"].update(tq_versions())
    t0 = time.perf_counter()
    torch.manual_seed(args.seed)  # the QNN weights
    gen = torch.Generator().manual_seed(args.seed)
    tokens = sorted(set(args.tokens))
    measurements, results, samples = [], [], []
    for n in args.qubits:
        for layers in args.layers:
            m, r = bench_cell(n, layers, tokens, args.repeats, args.tq_memory_gb, gen)
            measurements += m
            results += r
            samples.append(load_average())
            print(f"n={n} L={layers}: tq/qtha f32 {min(v['ratio']['tq32/qtha32'] for v in r):.1f}, "
                  f"f64 {min(v['ratio']['tq64/qtha64'] for v in r):.1f}, load {samples[-1][0]}",
                  file=sys.stderr, flush=True)
    threads = torch.get_num_threads()
    report.update(
        benchmark="torchquantum", schema_version=1,
        config={"ansatz": ANSATZ, "qubits": args.qubits, "layers": args.layers, "tokens": tokens,
                "repeats": args.repeats, "seed": args.seed, "quick": args.quick, "threads": threads,
                "tq_memory_gb": args.tq_memory_gb, "tq_states_per_gate": STATES_PER_GATE,
                "torchvision_shim": TORCHVISION_SHIM},
        load_average={"start": report.pop("load_average_start"), "samples": samples, "end": load_average()},
        wall_time_s=time.perf_counter() - t0, peak_rss_mb=peak_rss_mb(),
        measurements=measurements, results=results, summary=summary(results),
    )
    report["contended"] = contended(report["load_average"]["start"], samples, threads)
    json_path, md_path = write_outputs(args.out, "torchquantum", report, markdown(report))
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)
    print(markdown(report))
    return 0 if report["summary"]["agreement_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
