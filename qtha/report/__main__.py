"""``python -m qtha.report [experiment …] [--results results] [--out results]``.

Reads the run records (all experiments, or the named ones) and writes ``tables/`` (one per
experiment, a selection table per learning-rate selection), ``figures/`` (the Pareto view from the
``pareto_*`` experiments included), ``tables/params_7b.*`` and ``REPRODUCTION.md`` (the
pre-declared claims of ``qtha/report/claims.yaml``) under ``--out``. A whole report (no experiment named)
also removes the tables and figures it did not write this time (those of experiments whose records are gone),
so nothing stale sits beside the evidence; a named report touches only its own files. Exit status 0
when everything was written; 2, with one line on stderr, when there is nothing to report (no records,
an unknown experiment). A record that cannot be read (corrupt, an unknown schema) is left out with a
warning naming the file, and REPRODUCTION.md's header lists it.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Optional

from qtha.report import claims, counts, figures, records, tables
from qtha.provenance import git_sha
from qtha.results import atomic_write_text


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m qtha.report", description=__doc__.split("\n\n")[1])
    parser.add_argument("experiments", nargs="*", help="experiment names (folders of results/runs); default: all")
    parser.add_argument("--results", type=Path, default=Path("results"), help="folder holding runs/ (default: results)")
    parser.add_argument("--out", type=Path, default=Path("results"), help="where tables/, figures/ and "
                        "REPRODUCTION.md go (default: results)")
    args = parser.parse_args(argv)
    skipped: list[str] = []
    try:
        loaded = records.load(args.results, args.experiments, skipped)
    except records.RecordError as exc:
        print(f"qtha: error: {exc}", file=sys.stderr)
        return 2
    for reason in skipped:
        print(f"qtha: warning: left out {reason}", file=sys.stderr)
    df, history = records.frame(loaded), records.history(loaded)
    summary = tables.summarise(df)
    written: list[Path] = []
    for experiment in sorted(df.experiment.unique()):
        rows = summary[summary.experiment == experiment]
        written += tables.write_experiment(rows, experiment, args.out)
        written += tables.write_selection(args.results, experiment, args.out)
        written += figures.write_figures(rows, history[history.experiment == experiment], experiment, args.out)
    written += figures.write_pareto(summary, args.out)
    counted = counts.count_rows()
    written += counts.write_counts(counted, args.out)
    command = shlex.join(["python", "-m", "qtha.report", *argv])
    report = args.out / "REPRODUCTION.md"
    atomic_write_text(report, claims.render(loaded, counted, command, git_sha(), skipped=skipped))
    written.append(report)
    print(f"qtha: report from {len(loaded)} records: {len(written)} files under {args.out}")
    print("\n".join(f"  {p}" for p in written))
    if not args.experiments:
        for stale in _stale(args.out, written):
            stale.unlink()
            print(f"  removed {stale} (no records of its experiment)")
    return 0


GENERATED = {".md", ".csv", ".tex", ".png", ".pdf"}


def _stale(out: Path, written: list[Path]) -> list[Path]:
    """Report outputs under ``out/tables`` and ``out/figures`` that this whole report did not write."""
    kept = {p.resolve() for p in written}
    return sorted(p for folder in (out / "tables", out / "figures") if folder.is_dir() for p in folder.iterdir()
                  if p.is_file() and p.suffix in GENERATED and p.resolve() not in kept)


if __name__ == "__main__":
    sys.exit(main())
