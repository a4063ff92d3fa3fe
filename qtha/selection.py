"""Per-method hyperparameter selection (SPEC §5): read from records, never copied by hand.

A selection experiment trains every method on a log grid of learning rates with a selection split
carved from the training pool (``data.val_size``); a method's selected learning rate is the one with
the lowest mean ``heldout_loss`` over its finished seeds (ties: the smaller rate; a run that failed,
e.g. diverged, is out of the running). The test split is never read. A later experiment picks the
value up at composition with ``trainer.lr: ${qtha.selected:<selection experiment>}``: the resolver
finds the selection records whose adapter config equals the job's (or agrees on the adapter keys
named after the experiment, ``${qtha.selected:select_x,name,variant}``, or — ``${qtha.selected:select_x,default}``
— equals the default config of the job's adapter: a knob sweep at the default's learning rate), so the
resolved config, and with it the run's identity, holds the number. It refuses a row that has not yet finished
every rate of the grid its experiment file declares: a winner read off half a grid is not the selection the
protocol pre-declared, and a run that started early would carry it in its identity for good.
"""
from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from qtha.config import CONF_DIR
from qtha.errors import ConfigError
from qtha.identity import plain, semantic
from qtha.results import RunRecord, load_record, record_files, with_defaults

log = logging.getLogger("qtha")

SELECTED = "trainer.lr"
CRITERION = "heldout_loss"


@dataclass(frozen=True)
class Method:
    """One method's row of a selection: the learning rates tried, their mean criterion, the winner."""

    adapter: dict[str, Any]
    losses: dict[float, float]  # lr → mean heldout_loss over the finished seeds
    seeds: dict[float, int]  # lr → how many seeds finished
    failed: tuple[float, ...]  # learning rates with no finished seed (diverged or crashed)

    @property
    def selected(self) -> float:
        return min(self.losses, key=lambda lr: (self.losses[lr], lr))

    @property
    def at_edge(self) -> bool:
        """The winner is the smallest or largest rate tried (a failed rate bounds the grid too): the best rate
        may lie beyond the grid, so the selection is not yet trustworthy for this method."""
        tried = (*self.losses, *self.failed)
        return len(tried) > 1 and self.selected in (min(tried), max(tried))


def _adapter(record: RunRecord) -> dict[str, Any]:
    return semantic(record.config)["adapter"]


@functools.lru_cache(maxsize=16)
def _methods(folder: str, stamp: tuple[tuple[str, int, int], ...]) -> tuple[Method, ...]:
    records = []
    for p, _, _ in stamp:
        try:
            records.append(load_record(Path(p)))
        except (OSError, ValueError) as exc:  # named, and left out, as the report leaves it out
            log.warning("qtha: selection %s: left out %s", folder, exc)
    groups: dict[str, list[RunRecord]] = {}
    for record in records:
        groups.setdefault(repr(sorted(_adapter(record).items())), []).append(record)
    methods = []
    for group in groups.values():
        by_lr: dict[float, list[float]] = {}
        tried: set[float] = set()
        for record in group:
            lr = float(record.config["trainer"]["lr"])
            tried.add(lr)
            value = record.metrics.get(CRITERION)
            if record.status == "ok" and isinstance(value, (int, float)) and math.isfinite(value):
                by_lr.setdefault(lr, []).append(float(value))
        methods.append(Method(_adapter(group[0]), {lr: sum(v) / len(v) for lr, v in sorted(by_lr.items())},
                              {lr: len(v) for lr, v in sorted(by_lr.items())},
                              tuple(sorted(tried - set(by_lr)))))
    return tuple(methods)


def methods(results_dir: str | Path, experiment: str) -> list[Method]:
    """Every method of a selection experiment, with its learning-rate grid and criterion."""
    folder = Path(results_dir) / "runs" / experiment
    stamp = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in record_files(folder))
    return [m for m in _methods(str(folder), stamp) if m.losses]


def select(results_dir: str | Path, experiment: str, adapter: dict[str, Any], keys: Sequence[str] = ()) -> Method:
    """The selection row of ``adapter``: equal on ``keys``, or on the whole adapter config, or (``keys`` =
    ``("default",)``) the row of its adapter's default config."""
    found = methods(results_dir, experiment)
    if tuple(keys) == ("default",):
        adapter, keys = semantic(with_defaults({"adapter": {"name": adapter["name"]}}))["adapter"], ()
    wanted = {k: adapter.get(k) for k in keys} if keys else adapter
    hits = [m for m in found if all(m.adapter.get(k) == v for k, v in wanted.items())]
    if len(hits) == 1:
        return hits[0]
    where = Path(results_dir) / "runs" / experiment
    shown = ", ".join(f"{k}={v}" for k, v in (wanted.items() if keys else [("adapter.name", adapter.get("name"))]))
    if not hits:
        raise ConfigError(f"no finished selection run of this adapter ({shown}) in {where}; allowed: run the "
                          f"selection first (python -m qtha.run -m experiment={experiment} results_dir="
                          f"{results_dir}), or name the adapter keys to match: ${{qtha.selected:{experiment},name}}")
    raise ConfigError(f"{len(hits)} selection methods in {where} match this adapter ({shown}); allowed: name more "
                      f"adapter keys to match, e.g. ${{qtha.selected:{experiment},name,variant,bond_dim}}")


def grid(experiment: str) -> Optional[tuple[float, ...]]:
    """The learning rates ``conf/experiment/<experiment>.yaml`` sweeps (``hydra.sweeper.params``), or None when
    the file declares no discrete ``trainer.lr`` sweep (nothing to hold a row to)."""
    path = CONF_DIR / "experiment" / f"{experiment}.yaml"
    if not path.is_file():
        return None
    value = (OmegaConf.select(OmegaConf.load(path), "hydra.sweeper.params") or {}).get(SELECTED)
    if value is None:
        return None
    (override,) = OverridesParser.create().parse_overrides([f"{SELECTED}={value}"])
    if not override.is_discrete_sweep():
        return None
    return tuple(sorted(float(v) for v in override.sweep_iterator()))


def missing(method: Method, rates: Sequence[float]) -> list[float]:
    """The rates of ``rates`` with no finished run (ok or failed) in ``method``'s row."""
    tried = (*method.losses, *method.failed)
    return [lr for lr in rates if not any(math.isclose(lr, t, rel_tol=1e-9) for t in tried)]


def _resolve(experiment: str, *keys: str, _root_: DictConfig) -> float:
    adapter = semantic({"adapter": plain(OmegaConf.to_container(_root_.adapter, resolve=True))})["adapter"]
    method = select(str(_root_.results_dir), experiment, adapter, keys)
    rates = grid(experiment)
    left = missing(method, rates or ())
    if left:
        raise ConfigError(f"the selection row of {describe(method.adapter)} in {Path(_root_.results_dir) / 'runs' / experiment} "
                          f"has {len(rates) - len(left)} of the {len(rates)} learning rates {experiment} declares "
                          f"(missing {', '.join(f'{lr:g}' for lr in left)}); allowed: finish it first (python -m qtha.run "
                          f"-m experiment={experiment} results_dir={_root_.results_dir} runs only what is missing)")
    return method.selected


def register_resolver() -> None:
    """``${qtha.selected:<experiment>[,<adapter key>…]}``: the learning rate a selection experiment chose."""
    if not OmegaConf.has_resolver("qtha.selected"):
        OmegaConf.register_new_resolver("qtha.selected", _resolve)


def table(found: Sequence[Method]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a selection table: method, lr → mean criterion (n seeds), the selected lr."""
    rates = sorted({lr for m in found for lr in (*m.losses, *m.failed)})
    header = ["method", *(f"lr {lr:g}" for lr in rates), "selected lr"]
    rows = []
    for m in sorted(found, key=lambda m: repr(sorted(m.adapter.items()))):
        label = describe(m.adapter)
        cells = []
        for lr in rates:
            if lr in m.losses:
                mark = "**" if lr == m.selected else ""
                cells.append(f"{mark}{m.losses[lr]:.4f}{mark} (n={m.seeds[lr]})")
            else:
                cells.append("failed" if lr in m.failed else "—")
        rows.append([label, *cells, f"{m.selected:g}" + (" (grid edge)" if m.at_edge else "")])
    return header, rows


def describe(adapter: dict[str, Any], against: Optional[dict[str, Any]] = None) -> str:
    """``qtha (bond_dim=4, variant=mlp_qnn)``: the adapter name and the fields that differ from its schema's
    defaults (``against``, default: the registered schema)."""
    defaults = against if against is not None else with_defaults({"adapter": {"name": adapter["name"]}})["adapter"]
    shown = [f"{k}={v}" for k, v in sorted(adapter.items()) if k != "name" and defaults.get(k) != v]
    return f"{adapter['name']} ({', '.join(shown)})" if shown else adapter["name"]
