"""The one way from words to a checked config: compose (as Hydra does), then every owner's checks.

``python -m qtha.run`` composes and checks every job of a (multi)run here *before* Hydra
launches anything, so a typo in the fifth value of a sweep fails in a second with a message
naming the value and what is allowed, instead of a traceback after four finished jobs;
``python -m qtha.eval`` composes a record's overrides plus the new ones through the same
function. :func:`validate` is the orchestrator: each config group is checked by its owner, once
per job, before any model or dataset is loaded.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
from pathlib import Path
from typing import Any, Iterator, Optional

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, OmegaConfBaseException

from qtha.adapters import ADAPTERS, check_adapter, expected_trainable
from qtha.backbone import check_model, meta_model
from qtha.config import CONF_DIR, DataConfig, LoggerConfig, ModelConfig, QuantumConfig, RunConfig, TrainerConfig
from qtha.data import check_data, local_test_rows
from qtha.errors import ConfigError
from qtha.evaluation import check_eval, check_metrics_fit
from qtha.identity import FROZEN, semantic
from qtha.loggers import check_logger
from qtha.quantum import check_quantum
from qtha.selection import register_resolver
from qtha.trainer import check_trainer
from qtha.trainer import register_resolvers as register_trainer_resolvers

SAFE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")  # ``name`` is a folder of results/runs/ and of Hydra's outputs


def register_configs() -> None:
    """Store the schemas so YAML files can extend them (``defaults: [<name>_schema]``); the adapter
    schemas come from the adapter registry."""
    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RunConfig)
    cs.store(group="model", name="model_schema", node=ModelConfig)
    cs.store(group="data", name="data_schema", node=DataConfig)
    cs.store(group="trainer", name="trainer_schema", node=TrainerConfig)
    cs.store(group="logger", name="logger_schema", node=LoggerConfig)
    cs.store(group="quantum", name="quantum_schema", node=QuantumConfig)
    for name, spec in ADAPTERS.items():
        cs.store(group="adapter", name=f"{name}_schema", node=spec.config)
    register_resolver()
    register_trainer_resolvers()


def validate(cfg: Any, needs_weights: bool = True, trains: bool = True) -> None:
    """Every owner checks its group (one-line :class:`ConfigError`), before any model is loaded.

    ``needs_weights=False`` (parameter counting on the meta device) skips whether a hub model is
    reachable; ``trains=False`` (re-evaluating a saved adapter) allows evaluation-only datasets.
    The data check runs last: it may read the local data files (cached for the run itself).
    """
    check_model(cfg.model, allow_hub=cfg.allow_hub, needs_weights=needs_weights)
    check_adapter(cfg.adapter)
    check_trainer(cfg.trainer)
    check_quantum(cfg.quantum)
    check_eval(cfg.eval)
    check_logger(cfg.logger)
    if not 0 <= cfg.seed < 2**32:
        raise ConfigError(f"seed={cfg.seed} is out of range; allowed: 0..{2**32 - 1}")
    if not SAFE_NAME.fullmatch(str(cfg.name)) or str(cfg.name) in (".", ".."):
        raise ConfigError(f"name={cfg.name!r} is not a safe folder name; allowed: 1-100 letters, digits, '_', '.', "
                          "'-' (not '.' or '..')")
    if cfg.force and cfg.resume:
        raise ConfigError("force=true and resume=true contradict each other; allowed: force=true (rerun a finished "
                          "run from scratch) or resume=true (continue an unfinished one)")
    for key in ("work_dir", "results_dir", "adapter_dir"):
        check_writable_dir(key, str(cfg[key]))
    positions = cfg.model.arch.max_position_embeddings
    for key in ("data.max_length", "eval.max_new_tokens"):
        if OmegaConf.select(cfg, key) > positions:
            raise ConfigError(f"{key}={OmegaConf.select(cfg, key)} is longer than model={cfg.model.name} can attend "
                              f"to; allowed: at most model.arch.max_position_embeddings={positions} tokens")
    trained = ADAPTERS[cfg.adapter.name].layer is not None and cfg.trainer.max_steps > 0
    check_data(cfg.data, allow_hub=cfg.allow_hub, trains=trains and trained)
    if cfg.eval.metrics and cfg.eval.enabled:
        rows = local_test_rows(cfg.data)
        if rows is not None:
            check_metrics_fit(cfg.eval, rows, cfg.data.name)


def check_writable_dir(key: str, path: str) -> None:
    """``work_dir``/``results_dir``/``adapter_dir`` must be a folder this user can write, or one it can create."""
    if not path.strip():
        raise ConfigError(f"{key} is empty; allowed: a folder path")
    target = Path(path).expanduser().absolute()
    if target.exists() and not target.is_dir():
        raise ConfigError(f"{key}={path!r} is a file; allowed: a folder (existing or to be created)")
    parent = next(p for p in (target, *target.parents) if p.exists())
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}={path!r} cannot be written ({parent} is not a writable folder); allowed: a folder "
                          "this user can write")


def group_options(group: str) -> list[str]:
    """The YAML choices of a config group (``adapter`` → ``lora, none, …``)."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def expand_sweeps(overrides: list[str], params: Optional[dict[str, str]] = None) -> list[list[str]]:
    """The jobs of a multirun exactly as Hydra's basic sweeper makes them: the experiment's
    ``hydra.sweeper.params`` first, the command line's overrides after (a key on both: the command line
    wins), the cartesian product of the comma/range sweeps in that order."""
    parsed = OverridesParser.create().parse_overrides([*(f"{k}={v}" for k, v in (params or {}).items()), *overrides])
    (jobs,) = BasicSweeper.split_arguments(parsed, None)
    return [list(job) for job in jobs]


def sweeper_params(overrides: list[str]) -> dict[str, str]:
    """The ``hydra.sweeper.params`` the composed config holds (an experiment file's sweep), taking each
    swept value on the command line at its first choice (an experiment named by a sweep: its first)."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    first = [f"{o.get_key_element()}={next(iter(o.sweep_string_iterator()))}" if o.is_sweep_override()
             else o.input_line for o in parsed]
    register_configs()
    with _search_path():
        cfg = compose(config_name="config", overrides=first, return_hydra_config=True)
    return {str(k): str(v) for k, v in (OmegaConf.select(cfg, "hydra.sweeper.params") or {}).items()}


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
    several = re.search(r"Ambiguous value for argument '([^=']+)=([^']*)'", text)
    if several:
        key, given = several.groups()
        return (f"{key}={given} lists several values; allowed: -m (a sweep over them) or {key}=[{given}] (one list "
                "value)")
    hint = re.search(r"Value (.+?) \((\w+)\) is incompatible with type hint '(\w+)'", text)
    if hint:
        key = full_key.group(1) if full_key else (override.group(1) if override else "a value")
        return (f"{key} holds {hint.group(1)} ({hint.group(2)}); allowed: {hint.group(3)} values (write 1.0, not 1)"
                if hint.group(3) == "float" else f"{key} holds {hint.group(1)}; allowed: {hint.group(3)} values")
    unset = re.search(r"Missing mandatory value: ([\w.]+)", text)
    if unset:
        key = unset.group(1)
        choices = f"{key}=<{'|'.join(group_options(key))}>" if (CONF_DIR / key).is_dir() else f"{key}=<value>"
        return f"{key} is unset; allowed: {choices}"
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


@contextlib.contextmanager
def _search_path() -> Iterator[None]:
    """Hydra's compose API over ``conf/``; inside ``python -m qtha.run`` (Hydra already up, with the same search
    path) it composes in place (a run's re-evaluations compose so)."""
    if GlobalHydra.instance().is_initialized():
        yield
        return
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        yield


def _compose(overrides: list[str]) -> DictConfig:
    register_configs()
    with _search_path():
        return compose(config_name="config", overrides=overrides)


def check_adapter_fits(cfg: DictConfig) -> dict[str, int]:
    """Match targets and size every adapter on the meta model, before any weight is loaded.

    Turns "target_modules match nothing" or "3583 cannot be factorised into 4 cores" into a
    one-line :class:`ConfigError` in a second instead of after loading a 7B checkpoint.
    Returns the expected trainable count per target module type.
    """
    model = _shapes(cfg.model)
    try:
        counts = expected_trainable(model, cfg.adapter)
    except ValueError as exc:
        raise ConfigError(" ".join(str(exc).split())) from exc
    total, base = sum(counts.values()), sum(p.numel() for p in model.parameters())
    if total > base:
        raise ConfigError(f"adapter={cfg.adapter.name} would train {total:,} parameters, more than the {base:,} of "
                          f"model={cfg.model.name} itself; allowed: a smaller adapter (rank, bottleneck, qnn_layers, "
                          "target_modules)")
    return counts


_SHAPES: dict[str, Any] = {}


def _shapes(model: ModelConfig) -> Any:
    """The meta model of a model config, built once per process: a sweep's jobs share it (read only)."""
    key = json.dumps(OmegaConf.to_container(model, resolve=True), sort_keys=True)
    if key not in _SHAPES:
        _SHAPES[key] = meta_model(model)
    return _SHAPES[key]


def compose_job(overrides: list[str]) -> DictConfig:
    """Compose one job exactly as ``python -m qtha.run`` would (no checks), every interpolation resolved now
    (a ``${qtha.selected:…}`` that finds no selection fails here); errors in one line."""
    try:
        _check_added_keys(overrides)
        cfg = _compose(overrides)
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
        return cfg
    except InterpolationResolutionError as exc:
        cause = exc.__cause__ or exc.__context__
        while cause is not None and not isinstance(cause, ConfigError):  # a resolver's own one-line error
            cause = cause.__cause__ or cause.__context__
        if cause is not None:
            raise ConfigError(f"{exc.full_key}: {cause}") from exc
        raise ConfigError(_one_line(exc, overrides)) from exc
    except (HydraException, OmegaConfBaseException, ValueError) as exc:
        raise ConfigError(_one_line(exc, overrides)) from exc


def _check_added_keys(overrides: list[str]) -> None:
    """``+key=value`` / ``++key=value`` may add a config group's choice (``+experiment=…``) or an entry of an open
    mapping (``+reevaluate.<tag>=…``), never a key a schema lacks: Hydra would accept ``+adapter.rnk=8``
    silently and the run would ignore it."""
    added = [o for o in overrides if o.startswith("+") and "=" in o]
    keys = [o.lstrip("+").split("=", 1)[0] for o in added]
    keys = [k for k in keys if not k.startswith("hydra") and not (CONF_DIR / k).is_dir()]
    if not keys:
        return
    base = _compose([o for o in overrides if o not in added])
    for key in keys:
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        node = OmegaConf.select(base, parent, default=None) if parent else base
        schema_node = isinstance(node, DictConfig) and OmegaConf.get_type(node) is not dict  # a dataclass schema
        if OmegaConf.select(base, key, default=_ABSENT) is _ABSENT and (schema_node or node is None):
            allowed = ", ".join(sorted(str(k) for k in node.keys())) if isinstance(node, DictConfig) else "none"
            raise ConfigError(f"+{key} is not a config key; allowed keys{' in ' + parent if parent else ''}: "
                              f"{allowed}")


_ABSENT = object()


def compose_checked(overrides: list[str], needs_weights: bool = True) -> DictConfig:
    """Compose one job, validate it and size its adapters; any problem is a one-line :class:`ConfigError`."""
    cfg = compose_job(overrides)
    validate(cfg, needs_weights=needs_weights)
    check_adapter_fits(cfg)
    _check_reevaluations(cfg, overrides)
    return cfg


def _check_reevaluations(cfg: DictConfig, overrides: list[str]) -> None:
    """Each ``reevaluate.<tag>`` runs after training, as ``python -m qtha.eval`` would: its overrides are checked
    now, so a typo there fails before the run rather than after it."""
    base = [o for o in overrides if not o.lstrip("+~").startswith("reevaluate")]
    for tag, words in cfg.reevaluate.items():
        try:
            after = compose_job([*base, *shlex.split(str(words))])
            validate(after, trains=False)
        except (ConfigError, ValueError) as exc:
            raise ConfigError(f"reevaluate.{tag}: {exc}") from None
        before_sem, after_sem = semantic(cfg), semantic(after)
        changed = [g for g in FROZEN if before_sem[g] != after_sem[g]]
        if changed:
            raise ConfigError(f"reevaluate.{tag}: {changed[0]} cannot change at evaluation (the saved weights fix "
                              "model and adapter); allowed: data=<set>, data.*, eval.*, quantum=<preset>, quantum.*")


def check_jobs(overrides: list[str], multirun: bool) -> int:
    """Compose and validate every job up front (an experiment file's sweep included); returns the number of jobs."""
    app = [o for o in overrides if not o.lstrip("+~").startswith("hydra")]
    try:
        jobs = expand_sweeps(app, sweeper_params(app)) if multirun else [app]
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(_one_line(exc, app)) from exc
    for job in jobs:
        compose_checked(job)
    return len(jobs)
