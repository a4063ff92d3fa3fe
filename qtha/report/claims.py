"""REPRODUCTION.md: each claim judged from its pre-declared primary comparison (``claims.yaml``, SPEC §5).

Each comparison is a paired estimate (``qtha.report.paired``: QTHA is the method side, so a positive effect
favours QTHA). The verdict comes from the primary comparison alone; secondary comparisons are listed with
Holm-corrected p-values and never promoted. Fewer than three pairs is never a verdict.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import pandas as pd
import yaml

from qtha.report import noise, pareto, sweeps
from qtha.report.paired import MIN_PAIRS, Estimate, Records, outcome, paired, shortfall
from qtha.report.records import frame
from qtha.report.tables import markdown, summarise

CLAIMS_FILE = Path(__file__).with_name("claims.yaml")


@dataclass(frozen=True)
class Verdict:
    claim: dict[str, Any]
    verdict: str
    reason: str
    primary: Estimate
    secondary: list[tuple[Estimate, float]]  # (estimate, Holm-adjusted p)


def load_claims(path: Path = CLAIMS_FILE) -> list[dict[str, Any]]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))["claims"]


def holm(ps: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of ``ps`` (NaN stays NaN), in the input order."""
    order = sorted((p, i) for i, p in enumerate(ps) if not math.isnan(p))
    adjusted = [math.nan] * len(ps)
    running = 0.0
    for rank, (p, i) in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p))
        adjusted[i] = running
    return adjusted


def decide(est: Estimate, effect: float, unit: str) -> tuple[str, str]:
    """SPEC §5's rule on the primary estimate."""
    claimed = f"{effect:g}{'%' if unit == '%' else ' points'}"
    if est.n < MIN_PAIRS:
        return "not established", (f"{est.n} paired seed{'s' * (est.n != 1)} of the primary comparison (at least "
                                   f"{MIN_PAIRS} are needed)")
    shown = f"{est.effect:+.2f}{'%' if unit == '%' else ' points'} (95% CI {est.low:+.2f} to {est.high:+.2f}, n={est.n})"
    if est.low > 0 and est.effect >= effect:
        return "reproduced", f"{shown}: the CI excludes 0 and the effect reaches the claimed {claimed}"
    if est.high < effect:
        return "contradicted", f"{shown}: the whole CI lies below the claimed {claimed}"
    return "not established", f"{shown}: the CI does not settle the claimed {claimed}"


def judge(claim: dict[str, Any], records: Records) -> Verdict:
    unit = claim.get("unit", "%")
    primary = paired(records, claim["primary"], claim["metric"], unit)
    verdict, reason = decide(primary, float(claim["effect"]), unit)
    secondary = [paired(records, c, claim["metric"], unit) for c in claim.get("secondary") or []]
    return Verdict(claim, verdict, reason, primary, list(zip(secondary, holm([e.p for e in secondary]))))


# --------------------------------------------------------------------------- the count claim
def judge_counts(claim: dict[str, Any], counts: Optional[pd.DataFrame]) -> Verdict:
    """Exact counts decide a parameter claim: no seeds, so no interval."""
    def estimate(c: dict[str, Any]) -> Estimate:
        rows = counts[(counts.model == c["model"]) & (counts.config == c["method"])] if counts is not None else []
        if len(rows) == 0:
            return Estimate(c["name"], "trainable_params", 0, ())
        row = rows.iloc[0]
        fewer = float(row[f"fewer_than_lora_{c['comparator']}_pct"])
        return Estimate(c["name"], "trainable_params", 1, (), float(row.total_trainable),
                        float(row[f"lora_{c['comparator']}"]), fewer, fewer, fewer)

    primary = estimate(claim["primary"])
    need = float(claim["effect"]) - float(claim.get("tolerance", 0))
    if primary.n == 0:
        verdict, reason = "not established", "no parameter counts for the primary model"
    elif primary.effect >= need:
        verdict, reason = "reproduced", f"exactly {primary.effect:.1f}% fewer (claimed {claim['effect']}%)"
    else:
        verdict, reason = "contradicted", (f"exactly {primary.effect:.1f}% fewer, not the claimed {claim['effect']}% "
                                           "(exact counts: no seed noise to hide in)")
    return Verdict(claim, verdict, reason, primary,
                   [(estimate(c), math.nan) for c in claim.get("secondary") or []])


def verdicts(records: Records, counts: Optional[pd.DataFrame], claims: Optional[list[dict[str, Any]]] = None
             ) -> list[Verdict]:
    return [judge_counts(c, counts) if c.get("kind") == "count" else judge(c, records)
            for c in (claims if claims is not None else load_claims())]


# --------------------------------------------------------------------------- REPRODUCTION.md
def _num(value: float, digits: int = 4) -> str:
    return "—" if math.isnan(value) else f"{value:,.{digits}f}"


def _row(est: Estimate, unit: str, adjusted: float) -> list[str]:
    """One table row; ``adjusted``: the Holm p-value (NaN for the primary comparison, which has none)."""
    u = "%" if unit == "%" else " pts"
    return [est.name, est.metric, str(est.n), ",".join(map(str, est.seeds)) or "—", est.lr or "—",
            _num(est.method_mean), _num(est.comparator_mean),
            "—" if math.isnan(est.effect) else f"{est.effect:+.2f}{u}",
            "—" if math.isnan(est.low) else f"{est.low:+.2f} … {est.high:+.2f}{u}",
            "—" if math.isnan(est.p) else f"{est.p:.3g}", "—" if math.isnan(adjusted) else f"{adjusted:.3g}"]


HEADER = ["comparison", "metric", "n", "seeds", "lr (QTHA vs comparator)", "QTHA", "comparator", "effect",
          "95% CI", "p", "Holm p"]
COUNT_HEADER = ["comparison", "QTHA params", "LoRA params", "fewer"]


def _evidence(v: Verdict) -> str:
    unit = v.claim.get("unit", "%")
    if v.claim.get("kind") == "count":
        rows = [[e.name, _num(e.method_mean, 0), _num(e.comparator_mean, 0),
                 "—" if math.isnan(e.effect) else f"{e.effect:.1f}%"] for e in [v.primary, *(s for s, _ in v.secondary)]]
        return markdown(COUNT_HEADER, rows)
    rows = [_row(v.primary, unit, math.nan)] + [_row(e, unit, p) for e, p in v.secondary]
    rows[0][0] = f"**primary:** {rows[0][0]}"
    return markdown(HEADER, rows)


def _header(records: Records, command: str, sha: Optional[str], skipped: Sequence[str] = ()) -> str:
    status = pd.Series([r.status for _, r in records]).value_counts() if records else pd.Series(dtype=int)
    experiments = sorted({r.experiment for _, r in records})
    shas = pd.Series([(r.git_sha or "unknown")[:10] for _, r in records]).value_counts() if records else pd.Series()
    left_out = (f"> **{len(skipped)} unreadable record{'s' * (len(skipped) != 1)} left out:** "
                + "; ".join(f"`{reason}`" for reason in skipped) + "\n\n") if skipped else ""
    return (f"# Reproduction of the QTHA paper's claims (arXiv 2503.12790)\n\n"
            f"> Generated file, do not edit: `{command}` from {len(records)} records ({status.get('ok', 0)} ok, "
            f"{status.get('failed', 0)} failed, {status.get('running', 0)} incomplete) in {len(experiments)} "
            f"experiment{'s' * (len(experiments) != 1)} ({', '.join(experiments)}); code at git {sha or 'unknown'}; "
            f"records written at git {', '.join(f'{s} (×{n})' for s, n in shas.items())}.\n\n" + left_out +
            "Each claim is judged by the comparison declared for it in `qtha/report/claims.yaml` before the runs "
            "(SPEC §5): records paired by seed, the mean difference with a 95% t-interval, the effect relative to "
            "the comparator's mean (or in points). **reproduced** — the CI excludes 0 and the effect reaches the "
            "claim; **contradicted** — the whole CI lies below the claim; otherwise **not established** (always "
            f"with fewer than {MIN_PAIRS} paired seeds). Secondary comparisons carry Holm-corrected p-values and "
            "never change a verdict. The relative CI divides the difference's CI by the comparator's mean. The "
            "lr column shows the learning rates each side trained at: equal rates for different methods mean "
            "the records predate the per-method selection.\n\n")


def _scoreboard(found: Sequence[Verdict]) -> str:
    """Every measured comparison (primary and secondary, n ≥ 3) with its outcome, in one table."""
    rows = []
    for v in found:
        if v.claim.get("kind") == "count":
            continue
        unit = "%" if v.claim.get("unit", "%") == "%" else " pts"
        for est, role in [(v.primary, "primary"), *((e, "secondary") for e, _ in v.secondary)]:
            if outcome(est) != "—":
                rows.append([f"{v.claim['id']}. {v.claim['title']}", role, est.name, est.metric, str(est.n),
                             f"{est.effect:+.2f}{unit}", f"{est.low:+.2f} … {est.high:+.2f}{unit}",
                             f"**{outcome(est)}**"])
    if not rows:
        return "No comparison has three paired seeds yet.\n"
    return markdown(["claim", "role", "comparison", "metric", "n", "effect", "95% CI", "QTHA"], rows)


def _machines(records: Records) -> str:
    """Which machine and library versions produced each experiment's records: a comparison pins its two sides to
    one kind of machine in claims.yaml, and this table shows what each kind was."""
    seen: dict[tuple[str, str], list[float]] = {}
    resumed = sum(1 for _, rec in records if rec.resumed_from)
    for _, rec in records:
        env, ver = rec.environment or {}, rec.versions or {}
        machine = env.get("gpu") or f"CPU, {env.get('cpu_count', '?')} cores"
        key = (rec.experiment, f"{rec.config.get('trainer', {}).get('accelerator', '?')} | {machine} | "
                               f"{rec.precision or '?'} | "
                               f"{ver.get('torch', '?')} | {ver.get('transformers', '?')}")
        seen.setdefault(key, []).append(float(rec.wall_time_s or 0.0))
    rows = [[f"`{e}`", *m.split(" | "), str(len(w)), f"{sum(w) / 3600:.2f}"] for (e, m), w in sorted(seen.items())]
    total = sum(sum(w) for w in seen.values()) / 3600
    return (markdown(["experiment", "trainer.accelerator", "machine", "precision", "torch", "transformers", "records",
                      "run hours"], rows)
            + f"\nRun hours: the records' wall-clock time (runs sharing a machine overlap), {total:.2f} h in all"
            + (f"; {resumed} resumed record(s) count only the attempt that finished (the interrupted one's time is "
               "not recorded)" if resumed else "") + ".\n")


def _training(records: Records) -> str:
    """Eval loss at init and after training per method in each main comparison (``*_main``): a method whose loss
    does not move has not trained, and a comparison with it would say nothing about the method."""
    ok = [(p, r) for p, r in records if r.status == "ok" and r.experiment.endswith("_main")]
    if not ok:
        return "No main comparison has finished runs yet.\n"
    summary = summarise(frame(ok))
    summary = summary[(summary.eval_tag == "") & summary.init_loss_mean.notna()]
    rows = [[f"`{r.experiment}`", r.label, r.setting, str(r.n), f"{r.init_loss_mean:.4f}", f"{r.loss_mean:.4f}",
             f"{100 * (r.loss_mean / r.init_loss_mean - 1):+.1f}%"] for r in summary.itertuples()]
    return markdown(["experiment", "method", "setting", "n", "eval loss at init", "eval loss trained", "change"], rows)


def render(records: Records, counts: Optional[pd.DataFrame], command: str, sha: Optional[str],
           claims: Optional[list[dict[str, Any]]] = None, skipped: Sequence[str] = ()) -> str:
    found = verdicts(records, counts, claims)
    parts = [_header(records, command, sha, skipped), "## Verdicts\n\n",
             markdown(["claim", "verdict", "why"], [[f"{v.claim['id']}. {v.claim['title']}", v.verdict, v.reason]
                                                    for v in found]),
             "\n## Where QTHA wins, loses or ties\n\nEvery comparison with at least three paired seeds, primary or "
             "secondary: **wins** / **loses** when the 95% CI of the paired difference excludes 0 in QTHA's favour / "
             "against it, **ties** when it does not (whatever effect the paper claimed; the verdicts above also ask "
             "for the claimed size). Secondary rows are exploratory (Holm p-values in each claim's table).\n\n",
             _scoreboard(found)]
    for v in found:
        c = v.claim
        parts.append(f"\n## {c['id']}. {c['title']}\n\n**Paper:** {c['paper']}\n\n**Primary comparison "
                     f"(pre-declared):** {c['primary']['name']}.\n\n**Verdict: {v.verdict}** — {v.reason}.\n\n")
        parts.append(_evidence(v))
        if v.primary.mismatched:
            parts.append(f"\nSeed(s) {', '.join(map(str, v.primary.mismatched))} left unpaired in the primary "
                         "comparison: its two runs trained at different precisions (`trainer.precision: auto` "
                         "resolved differently on their machines; see each table's setting column).\n")
        if v.claim.get("kind") != "count" and v.primary.n < MIN_PAIRS:
            sides = (("QTHA side", "method"), ("comparator", "comparator"))
            parts.append("\nWhy the primary comparison has too few pairs: " + "; ".join(
                f"{label}: {shortfall(records, v.claim['primary'][key])}" for label, key in sides) + ".\n")
    parts.append("\n## Parameters vs loss (Pareto)\n\n" + pareto.section(records))
    parts.append("\n## Knob sweeps\n\n" + sweeps.section(records))
    parts.append("\n## Exact vs finite shots vs noise\n\n" + noise.section(records))
    parts.append("\n## Does every method train?\n\nEval loss at init (each adapter starts as the identity, so this is "
                 "the base model's) and after training, mean over seeds, for every method of the main comparisons; "
                 "each at its own selected learning rate.\n\n" + _training(records))
    parts.append("\n## Where the runs ran\n\n" + _machines(records))
    experiments = sorted({r.experiment for _, r in records})
    parts.append("\n## Tables and figures\n\n" + "".join(f"- `{e}`: [tables/{e}.md](tables/{e}.md)\n"
                                                         for e in experiments))
    if counts is not None:
        parts.append("- parameters at 7B, against LoRA r = 4 and r = 8: [tables/params_7b.md](tables/params_7b.md)\n")
    return "".join(parts)
