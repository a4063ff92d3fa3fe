"""Helpers shared by the benchmark scripts: interleaved timing, robust statistics, provenance, atomic output.

Why interleave: on a shared machine the load drifts during a run; timing the contenders round-robin
(each repeat visits every contender, in a rotated order) spreads that drift over all of them instead
of penalising whichever ran last. Medians and IQRs, not means, because one preempted call should
not move the reported number.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from qtha.provenance import environment, git_dirty, git_sha, versions
from qtha.results import atomic_write_text

LOAD_THRESHOLD = 1.5  # 1-min load average above which other jobs are taken to be running


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(wall seconds, result) of one call."""
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def round_robin(jobs: dict[str, Callable[[], Any]], repeats: int) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Time every job ``repeats`` times, rotating the visiting order each repeat.

    Returns the times per job and each job's result from its last call.
    """
    names = list(jobs)
    times: dict[str, list[float]] = {k: [] for k in names}
    last: dict[str, Any] = {}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            dt, last[name] = timed(jobs[name])
            times[name].append(dt)
    return times, last


def summarize(times: Sequence[float]) -> dict[str, float]:
    """Median, interquartile range (0 for fewer than two samples) and minimum, in seconds."""
    ts = sorted(times)
    iqr = 0.0
    if len(ts) > 1:
        q = statistics.quantiles(ts, n=4, method="inclusive")
        iqr = q[2] - q[0]
    return {"median_s": statistics.median(ts), "iqr_s": iqr, "min_s": ts[0]}


def load_average() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def contended(start: Sequence[float], samples: Sequence[Sequence[float]], own_threads: int) -> bool:
    """Whether other jobs shared the machine: the 1-min load before we started is above the threshold,
    or a later sample exceeds it by more than our own threads can account for."""
    return start[0] > LOAD_THRESHOLD or any(s[0] > LOAD_THRESHOLD + own_threads for s in samples)


def contention_note(report: dict[str, Any], cpus: int, suffix: str = "") -> list[str]:
    """The markdown warning that absolute times were taken on a shared machine (nothing when it was quiet)."""
    if not report["contended"]:
        return []
    load = report["load_average"]
    later = [v[0] for v in load.get("samples", [])] + list(load.get("end", [])[:1])
    return [f"**Measured while other jobs ran** (1-min load average {load['start'][0]} at the start, up to "
            f"{max(later, default=load['start'][0])} later, on {cpus} CPUs): absolute times are inflated and "
            f"noisy{suffix}.", ""]


def run_info(argv: Sequence[str]) -> dict[str, Any]:
    """Provenance of one benchmark run: command, time, git sha, versions, machine and its load."""
    env = environment()
    env.update(hostname=platform.node(), cpus_available=len(os.sched_getaffinity(0)),
               omp_num_threads=os.environ.get("OMP_NUM_THREADS"))
    return {
        "command": [Path(sys.executable).name, *argv],
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_sha": git_sha(), "git_dirty": git_dirty(),
        "versions": versions(),
        "environment": env,
        "load_average_start": load_average(),
    }


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: KiB


def md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def write_outputs(out_dir: str | Path, stem: str, data: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    """``<out_dir>/<stem>.json`` and ``.md``, each written atomically (temp file + rename)."""
    out = Path(out_dir)
    json_path, md_path = out / f"{stem}.json", out / f"{stem}.md"
    atomic_write_text(json_path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(md_path, markdown.rstrip() + "\n")
    return json_path, md_path


def ints(text: str) -> list[int]:
    """A comma-separated list of ints (an argparse ``type``)."""
    return [int(v) for v in text.split(",") if v.strip()]


def apply_quick(args: Any, quick: dict[str, Any]) -> None:
    """Overwrite ``args`` with a script's ``--quick`` sizes when the flag is set."""
    if args.quick:
        for k, v in quick.items():
            setattr(args, k, v)


def machine_line(report: dict[str, Any], threads: int, packages: Sequence[str], rss: str = "peak RSS") -> str:
    """The markdown's provenance line: machine, CPUs, threads, load, package versions, git, start, wall, RSS."""
    env, vers, load = report["environment"], report["versions"], report["load_average"]
    pkgs = ", ".join(f"{p} {vers.get(p)}" for p in packages)
    return (f"Machine: {env['hostname']}, {env['platform']}, {env['cpu_count']} CPUs ({env['cpus_available']} "
            f"available), torch threads {threads}, OMP_NUM_THREADS {env['omp_num_threads']}; load average "
            f"{load['start']} at the start, {load['end']} at the end; {pkgs}; git {report['git_sha']}; "
            f"{report['started_at']}; wall {report['wall_time_s']:.0f} s, {rss} {report['peak_rss_mb']:.0f} MB.")
