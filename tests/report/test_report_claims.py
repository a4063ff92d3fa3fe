"""REPRODUCTION.md verdicts on the synthetic records, and how the scale decides between them."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from synthetic_records import COUNTS, results_dir_fixture  # noqa: F401 (the results_dir fixture)  # noqa: F401 (pytest fixture)

from qtha.report import claims, records, tables


def _verdicts(df: pd.DataFrame, count_rows: pd.DataFrame | None = None) -> dict[str, claims.Verdict]:
    summary = tables.summarise(df)
    found = [claims.claim_params(summary, count_rows), *(judge(summary) for judge in claims.CLAIMS)]
    return {v.claim.split(".")[0]: v for v in found}


def test_fixture_verdicts(results_dir: Path):
    v = _verdicts(records.frame(records.load(results_dir)), COUNTS)
    assert v["1"].verdict == "not reproduced" and "54.6% fewer" in v["1"].reason  # exact 7B counts decide
    assert v["2"].verdict == "reproduced" and "19.1% lower train loss" in v["2"].reason  # (1.10 - 0.89) / 1.10
    assert v["3"].verdict == "not measurable here" and "cpsycound" in v["3"].reason
    assert v["4"].verdict == "not measurable here" and "floor" in v["4"].reason
    assert ["design_card", "data.size=300", "smollm2_135m", "synthetic_math", "60", "0.8900 ± 0.0141 (n=2; seeds 1,2)",
            "1.1000 ± 0.1000 (n=3; seeds 1,2,3)", "19.1% lower train loss (3.6 s.e.)"] in v["2"].evidence
    # 0.96 vs 1.00: a difference of 0.04 against s.e. sqrt(0.0141²/2 + 0.1²/3) = 0.059
    assert "4.0% lower train loss (0.7 s.e., within seed noise)" in [row[-1] for row in v["2"].evidence]
    assert "(3.6 s.e.)" in v["2"].reason and "measured on smollm2_135m, not the paper's 7B models" in v["2"].reason


def test_a_single_seed_effect_says_so(results_dir: Path):
    df = records.frame(records.load(results_dir))
    v = _verdicts(df[df.seed == 1])["2"]                    # QTHA 0.88 vs LoRA 1.00 at data.size=300, one seed each
    assert v.verdict == "not at this scale" and "12.0% lower train loss (single seed)" in v.reason


def test_without_7b_counts_the_parameter_claim_is_judged_at_the_run_scale(results_dir: Path):
    v = _verdicts(records.frame(records.load(results_dir)))
    assert v["1"].verdict == "not at this scale" and "96.7% more" in v["1"].reason


def test_a_small_effect_is_not_at_this_scale_on_small_models_and_not_reproduced_on_7b(results_dir: Path):
    df = records.frame(records.load(results_dir))
    df.loc[df.adapter == "qtha", "train_loss"] = 1.0  # 9.1% / 0% below LoRA
    assert _verdicts(df)["2"].verdict == "not at this scale"
    df["model"] = "qwen2_7b"
    assert _verdicts(df)["2"].verdict == "not reproduced"


def test_maths_above_the_floor_is_judged_on_points(results_dir: Path):
    df = records.frame(records.load(results_dir))
    df.loc[df.adapter == "lora", "strict_accuracy"] = 68.0
    df.loc[df.adapter == "qtha", "strict_accuracy"] = 82.0
    assert _verdicts(df)["4"].verdict == "reproduced"


def test_render_has_a_generated_header_and_every_claim(results_dir: Path):
    df = records.frame(records.load(results_dir))
    text = claims.render(df, tables.summarise(df), COUNTS, "python -m qtha.report", "abc123")
    assert text.splitlines()[2].startswith("> Generated file, do not edit: `python -m qtha.report` from 14 records "
                                           "(12 ok, 1 failed, 1 incomplete; re-evaluations: 1)")
    assert "code at git abc123" in text
    for title in ("1. Parameters", "2. Training loss", "3. Dialogue metrics", "4. Maths accuracy"):
        assert f"## {title}" in text
