"""Compose configs outside ``@hydra.main`` and turn Hydra's errors into one line.

``python -m qtha.run`` checks every job of a (multi)run here *before* Hydra launches
anything, so a typo in the fifth value of a sweep fails in a second with a message naming
the value and what is allowed, instead of a traceback after four finished jobs.
"""
from __future__ import annotations

import itertools
import re
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from qtha.config import ConfigError, register_configs, validate

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def group_options(group: str) -> list[str]:
    """The YAML choices of a config group (``adapter`` → ``lora, none, …``)."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def expand_sweeps(overrides: list[str]) -> list[list[str]]:
    """The jobs of a multirun: the cartesian product of comma/range sweeps, in Hydra's order."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    choices = []
    for o in parsed:
        key = o.get_key_element()
        if o.is_sweep_override():
            choices.append([f"{key}={v}" for v in o.sweep_string_iterator()])
        else:
            choices.append([o.input_line])
    return [list(job) for job in itertools.product(*choices)]


def _one_line(exc: Exception, overrides: list[str]) -> str:
    """Hydra/OmegaConf error → ``<key>=<value> …; allowed: …``."""
    text = f"{exc} {exc.__cause__ or ''}"
    missing = re.search(r"Could not find '([\w/]+)/([^']+)'", text)
    if missing:
        group, value = missing.groups()
        return f"{group}={value!r} is unknown; allowed: {', '.join(group_options(group))}"
    bad_key = re.search(r"Key '([^']+)' not in '(\w+)'", text)
    override = re.search(r"Could not override '([^']+)'", text)
    if bad_key:
        full = override.group(1) if override else bad_key.group(1)
        parent = full.rsplit(".", 1)[0] if "." in full else ""
        allowed = _keys_of(parent, [o for o in overrides if not o.split("=")[0].endswith(full)])
        return f"{full} is not a config key; allowed keys{' in ' + parent if parent else ''}: {allowed}"
    value = re.search(r"Value '([^']*)' (?:of type '\w+' )?(?:could not be converted to|is not a valid) (\w+)", text)
    full_key = re.search(r"full_key: ([\w.\[\]]+)", text)
    if value:
        key = full_key.group(1) if full_key else (override.group(1) if override else "a value")
        return f"{key}={value.group(1)!r} is not a valid {value.group(2).lower()}"
    not_list = re.search(r"Error merging override ([\w.]+)=(.*?) .*is not a ListConfig", text)
    if not_list:
        key, given = not_list.groups()
        return f"{key}={given!r} is not a list; allowed: {key}=[a,b,...]"
    return " ".join(str(exc).split())


def _keys_of(parent: str, overrides: list[str]) -> str:
    try:
        cfg = _compose(overrides)
        node = OmegaConf.select(cfg, parent) if parent else cfg
        return ", ".join(sorted(str(k) for k in node.keys()))
    except Exception:  # noqa: BLE001 - only used to enrich an error message
        return "see `python -m qtha.run --cfg job`"


def _compose(overrides: list[str]) -> DictConfig:
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def check_adapter_fits(cfg: DictConfig) -> dict[str, int]:
    """Match targets and size every adapter on the meta model, before any weight is loaded.

    Turns "target_modules match nothing" or "3583 cannot be factorised into 4 cores" into a
    one-line :class:`ConfigError` in a second instead of after loading a 7B checkpoint.
    Returns the expected trainable count per target module type.
    """
    from qtha.adapters import expected_trainable
    from qtha.backbone import meta_model

    try:
        return expected_trainable(meta_model(cfg.model), cfg.adapter)
    except ValueError as exc:
        raise ConfigError(" ".join(str(exc).split())) from exc


def compose_checked(overrides: list[str], needs_weights: bool = True) -> DictConfig:
    """Compose one job, validate it and size its adapters; any problem is a one-line :class:`ConfigError`."""
    try:
        cfg = _compose(overrides)
    except (HydraException, OmegaConfBaseException, ValueError) as exc:
        raise ConfigError(_one_line(exc, overrides)) from exc
    validate(cfg, needs_weights=needs_weights)
    check_adapter_fits(cfg)
    return cfg


def check_jobs(overrides: list[str], multirun: bool) -> int:
    """Compose and validate every job up front; returns the number of jobs."""
    app = [o for o in overrides if not o.lstrip("+~").startswith("hydra")]
    try:
        jobs = expand_sweeps(app) if multirun else [app]
    except HydraException as exc:
        raise ConfigError(" ".join(str(exc).split())) from exc
    for job in jobs:
        compose_checked(job)
    return len(jobs)
