"""REPRODUCTION.md's noise section: trained QTHA adapters re-measured with finite shots and noisy circuits.

``noise_eval`` re-evaluates trained adapters without retraining (a run's ``reevaluate``, recorded under the
record's ``evaluations``): the same rows with the exact circuit, with 1000 shots, and on a density-matrix device
with depolarizing noise and readout error. The question is what a real device would cost the adapter, so each
tag is set against the *exact* re-evaluation of the same adapter on the same rows, seed by seed (the paired
estimate of :mod:`qtha.report.paired`): the only difference between the two is how the QNN ran. The exact
reference is the evaluation whose ``quantum.*`` values are the ones the adapter trained with; a tag is compared
with it only when it read the same rows (same data fingerprint and the same non-quantum changes).
"""
from __future__ import annotations

from collections import defaultdict
from statistics import fmean, stdev
from typing import Any, Optional

from qtha.report.figures import ci95
from qtha.report.paired import Records, change, estimate, reading
from qtha.report.records import effective, settings
from qtha.report.tables import markdown

QUANTUM = "quantum."


def _quantum(changes: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in changes.items() if k.startswith(QUANTUM)}


def _rows_read(ev: dict[str, Any]) -> tuple[Any, str]:
    """What an evaluation read: its data fingerprint and its non-quantum changes."""
    rest = {k: v for k, v in (ev.get("changes") or {}).items() if not k.startswith(QUANTUM)}
    return ev.get("data_fingerprint"), repr(sorted(rest.items()))


def reference(flat: dict[str, Any], evaluations: list[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """The evaluation that ran the circuit as the adapter trained (every ``quantum.*`` change equal to the run's
    config), or None."""
    for ev in evaluations:
        q = _quantum(ev.get("changes") or {})
        if q and all(flat.get(k) == v for k, v in q.items()):
            return ev
    return None


def describe(changes: dict[str, Any]) -> str:
    """How an evaluation ran the QNN, in a few words (``default.mixed, depolarizing p=0.01, readout error``)."""
    q = _quantum(changes)
    if q.get("quantum.backend") == "torch":
        return "exact (torch state vector)"
    parts = [str(q.get("quantum.device", "?"))]
    if q.get("quantum.shots"):
        parts.append(f"{q['quantum.shots']} shots")
    if q.get("quantum.noise") not in (None, "none"):
        parts.append(f"{q['quantum.noise']} p={q.get('quantum.p1'):g}")
    if q.get("quantum.readout"):
        parts.append("readout error")
    return ", ".join(parts) if len(parts) > 1 else f"{parts[0]}, exact"


Run = tuple[int, Optional[dict[str, Any]], list[dict[str, Any]]]


def _groups(records: Records) -> dict[tuple[str, str, str], list[Run]]:
    """(experiment, adapter, setting) → per finished record with re-evaluations: seed, its reference, the rest."""
    done = [(p, r) for p, r in records if r.status == "ok" and r.evaluations]
    setting = settings(records)
    out: dict[tuple[str, str, str], list[Run]] = defaultdict(list)
    for path, rec in done:
        ref = reference(effective(rec), rec.evaluations)
        out[rec.experiment, rec.config["adapter"]["name"], setting[path]].append(
            (int(rec.config["seed"]), ref, [e for e in rec.evaluations if e is not ref]))
    return out


def table(records: Records) -> str:
    """Per experiment, method, data size and tag: n, seeds, eval loss ± 95 % CI half-width, the paired loss change
    against the exact re-evaluation, and the mean evaluation time (what simulating the device costs)."""
    rows = []
    for (experiment, adapter, setting), runs in sorted(_groups(records).items(), key=lambda kv: repr(kv[0])):
        by_tag: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
        refs = {seed: ref for seed, ref, _ in runs if ref is not None}
        for seed, ref, others in runs:
            for ev in ([ref] if ref is not None else []) + others:
                by_tag[ev["tag"]][seed] = ev
        ref_tags = {ref["tag"] for ref in refs.values()}
        def order(tag: str) -> tuple[bool, float]:  # the reference first, then from least to most degraded
            return tag not in ref_tags, fmean(e["metrics"]["loss"] for e in by_tag[tag].values())

        for tag in sorted(by_tag, key=order):
            evs = by_tag[tag]
            seeds = sorted(evs)
            losses = [evs[s]["metrics"]["loss"] for s in seeds]
            times = [evs[s].get("timings", {}).get("validate_s") for s in seeds]
            if tag in ref_tags:
                vs = ["(reference)", ""]
            else:
                pairs = [s for s in seeds if s in refs and _rows_read(refs[s]) == _rows_read(evs[s])]
                est = estimate(tag, "loss", pairs, [evs[s]["metrics"]["loss"] for s in pairs],
                               [refs[s]["metrics"]["loss"] for s in pairs], "%") if pairs else None
                vs = [change(est), reading(est)] if est else ["— (no exact reference on the same rows)", ""]
            rows.append([f"`{experiment}`", f"{adapter} [{setting}]" if setting else adapter, f"`{tag}`",
                         describe(next(iter(evs.values())).get("changes") or {}), str(len(seeds)),
                         ",".join(map(str, seeds)), f"{fmean(losses):.4f}",
                         f"{ci95(stdev(losses), len(seeds)):.4f}" if len(seeds) > 1 else "—", *vs,
                         f"{fmean(times):.1f}" if all(isinstance(t, (int, float)) for t in times) else "—"])
    if not rows:
        return ("No re-evaluations recorded yet: `python -m qtha.run -m experiment=noise_eval results_dir=results` "
                "re-measures math_easy_main's trained QTHA adapters.\n")
    return markdown(["experiment", "method", "tag", "how the QNN ran", "n", "seeds", "eval loss", "95% CI ±",
                     "loss vs exact (95% CI)", "reading", "eval time (s)"], rows)


INTRO = ("Trained adapters re-evaluated without retraining (`noise_eval`): the exact circuit, finite shots, and a "
         "density-matrix device with depolarizing noise after every gate and the authors' readout error. **loss vs "
         "exact**: the paired change of eval loss against the same adapter's exact re-evaluation on the same rows, "
         "seed by seed, with its 95% CI; **higher** / **lower** when the CI excludes 0. **eval time**: seconds to "
         "evaluate those rows on the machine each ran on (the cost of simulating the device).\n\n")


def section(records: Records) -> str:
    return INTRO + table(records)
