"""Shared fixtures: compose the real configs and shrink them (lightning-hydra-template style).

The fast tier (``-m 'not slow'``) is kept honest in two halves. A collection hook marks ``slow``
every test that asks for a fixture which spawns a Python process (``python_process``, ``cli``)
or loads the embedded SmolLM2 (``smollm2``); and while an unmarked test runs, starting a Python
process or loading SmolLM2 fails it, naming the fixture to use. So a test can only be fast if it
really is. A long family of cases of one code path (bad inputs, bad settings) is *sampled* in the fast tier
(:func:`sampled`: every k-th case) and run whole in the full suite.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SLOW_FIXTURES = {"python_process", "cli", "smollm2"}

# Tests never touch the network or prompt for a W&B login.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")


def sampled(cases: list[Any], every: int) -> list[Any]:
    """``cases`` for ``parametrize``: all in the full suite, every ``every``-th (the first included) in the fast tier."""
    return [pytest.param(*(c if isinstance(c, tuple) else (c,)), marks=() if i % every == 0 else pytest.mark.slow)
            for i, c in enumerate(cases)]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _fast_tests_stay_fast(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """In a test not marked slow, a Python subprocess or a SmolLM2 load is an error."""
    if request.node.get_closest_marker("slow"):
        return
    popen_init = subprocess.Popen.__init__

    def guarded_popen(self, args, *a, **k):  # type: ignore[no-untyped-def]
        argv0 = str(args[0] if isinstance(args, (list, tuple)) else args).split()[0]
        if Path(argv0).name.startswith("python") or argv0 == sys.executable:
            raise AssertionError("this test starts a Python process: use the python_process or cli fixture, "
                                 "which marks it slow")
        popen_init(self, args, *a, **k)

    def no_smollm2(*_a, **_k):  # type: ignore[no-untyped-def]
        raise AssertionError("this test loads SmolLM2: request the smollm2 fixture, which marks it slow")

    monkeypatch.setattr(subprocess.Popen, "__init__", guarded_popen)
    monkeypatch.setattr("qtha.backbone.cached_gguf_dir", no_smollm2)


def experiment_text(name: str) -> str:
    """An experiment file's text and that of the experiment files its defaults list includes (``- math_easy_main``),
    so a test can see what it reads (``${qtha.selected:…}``) whichever file says it."""
    from qtha.compose import CONF_DIR

    folder = CONF_DIR / "experiment"
    text = (folder / f"{name}.yaml").read_text()
    return text + "".join(experiment_text(n) for n in re.findall(r"^  - (\w+)$", text, re.M)
                          if (folder / f"{n}.yaml").is_file())


def randomised_tiny(*overrides: str) -> tuple[Any, Any]:
    """``(model, tokenizer)``: the tiny Llama with the adapter of ``overrides`` injected and every trainable
    parameter moved off its init (Δ ≠ 0), seeded, so that an adapter's branch really computes something."""
    import torch

    from qtha.adapters import inject_adapters
    from qtha.backbone import load_backbone
    from qtha.compose import compose_checked

    cfg = compose_checked(["model=tiny_llama", *overrides])
    torch.manual_seed(0)
    model, tok = load_backbone(cfg.model)
    inject_adapters(model, cfg.adapter, quantum=cfg.quantum)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model, tok


def tiny_overrides(tmp_path: Path, *extra: str) -> list[str]:
    """A few-second run on the random tiny Llama, writing only under ``tmp_path``."""
    return [
        "model=tiny_llama", "logger=csv",
        "data.size=16", "data.test_size=4", "data.pool_size=64", "data.max_length=96",
        "trainer.max_steps=4", "trainer.val_check_interval=2", "trainer.batch_size=2",
        "trainer.warmup_steps=1", "trainer.enable_progress_bar=false", "eval.max_new_tokens=8",
        f"results_dir={tmp_path / 'results'}", f"work_dir={tmp_path / 'outputs'}", *extra,
    ]


def clean_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a spawned process: no W&B key, no hub, HOME under ``tmp_path``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB", "HF_"))}
    env.update(HOME=str(tmp_path / "home"), WANDB_API_KEY="", PYTHONPATH=str(REPO / "tests"))
    return env


@pytest.fixture
def python_process(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess]:
    """``run(args, cwd=tmp_path, timeout=300, env=None)``: ``python <args>`` in a clean environment (slow)."""
    def run(args: list[str], cwd: Path = tmp_path, timeout: int = 300,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *args], cwd=cwd, env=env or clean_env(tmp_path), text=True,
                              capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)

    return run


@pytest.fixture
def cli(python_process: Callable[..., subprocess.CompletedProcess]) -> Callable[..., subprocess.CompletedProcess]:
    """``cli(args, timeout=300)``: ``python -m qtha.run <args>`` in ``tmp_path`` (slow)."""
    def run(args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
        return python_process(["-m", "qtha.run", *args], timeout=timeout)

    return run


@pytest.fixture
def smollm2() -> list[str]:
    """Overrides that keep the embedded SmolLM2 default model (requesting this marks a test slow)."""
    return ["model=smollm2_135m"]


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data slices not found at {SHARED_DATA} (only CI and the team's machines have them)")
    return SHARED_DATA


_REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def quick_benchmark(tmp_path: Path, python_process: Callable) -> Callable[..., tuple[dict[str, Any], str]]:
    """``run(name)``: ``benchmarks/<name>.py --quick --threads 1`` into a temp folder; (its JSON report, its markdown)."""

    def run(name: str, timeout: int = 600) -> tuple[dict[str, Any], str]:
        out = tmp_path / "out"
        proc = python_process([f"benchmarks/{name}.py", "--quick", "--threads", "1", "--out", str(out)], cwd=_REPO,
                              timeout=timeout)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert sorted(p.name for p in out.iterdir()) == [f"{name}.json", f"{name}.md"]  # no temp files left behind
        report = json.loads((out / f"{name}.json").read_text(encoding="utf-8"))
        assert report["benchmark"] == name and report["schema_version"] == 1
        assert report["versions"]["torch"] and "git_sha" in report and report["wall_time_s"] > 0
        return report, (out / f"{name}.md").read_text(encoding="utf-8")

    return run
