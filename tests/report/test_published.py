"""The published verdicts agree with the committed records: ``results/REPRODUCTION.md``'s verdict table is what
``qtha.report.claims`` computes from ``results/runs`` today, and the README's results table says the same."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from qtha.report import claims, records

ROOT = Path(__file__).resolve().parents[2]
REPRODUCTION = ROOT / "results" / "REPRODUCTION.md"


@pytest.fixture(scope="module")
def published() -> dict[str, str]:
    if not REPRODUCTION.is_file():
        pytest.skip("results/REPRODUCTION.md not found")
    text = REPRODUCTION.read_text(encoding="utf-8")
    rows = [line.strip("|").split("|") for line in text.split("## Verdicts", 1)[1].split("\n## ", 1)[0].splitlines()
            if re.match(r"\|\s*\d\. ", line)]
    return {cells[0].strip(): cells[1].strip() for cells in rows}


def test_reproduction_md_is_what_the_committed_records_give(published: dict[str, str]) -> None:
    loaded = records.load(ROOT / "results")
    for claim in claims.load_claims():
        if claim.get("kind") == "count":
            continue  # exact 7B counts: tests/report/test_report_claims.py
        assert published[f"{claim['id']}. {claim['title']}"] == claims.judge(claim, loaded).verdict, claim["id"]


def test_the_readme_results_table_says_what_reproduction_md_says(published: dict[str, str]) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    body = readme.split("## Results: what the evidence says today", 1)[1].split("\n## ", 1)[0]
    said = {cells[0].strip(): cells[-1].strip() for cells in
            (line.strip("|").split("|") for line in body.splitlines() if re.match(r"\|\s*\d\. ", line))}
    assert said.keys() == published.keys()
    assert said == published
