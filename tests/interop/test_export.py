"""``qtha.export`` and ``qtha.load_adapter``: a trained run's adapter outside qtha and back, with peft and plain
transformers as the oracles (no missing or unexpected key, logits equal to qtha's to 1e-5)."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM

import qtha
from conftest import sampled, tiny_overrides
from peft_oracle import batch, tiny_llama
from qtha.adapters import adapter_layers
from qtha.build import build_model
from qtha.compose import compose_checked
from qtha.errors import ConfigError
from qtha.export import export, main
from qtha.interop.adapter_dir import CONFIG_FILE, WEIGHTS_FILE, read_adapter_dir
from qtha.train import train

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # peft calls a deprecated transformers API
TOL = {"rtol": 0, "atol": 1e-5}
RUNS = {  # a tiny run per kind of adapter: peft's two, a mergeable tensor network, QTHA with and without its QNN
    "lora": ["adapter=lora", "trainer.lr=3e-2"],
    "dora": ["adapter=dora", "trainer.lr=3e-2"],
    "quanta": ["adapter=quanta", "trainer.lr=3e-2"],
    "qtha": ["adapter=qtha", "adapter.bottleneck=16", "adapter.n_cores=2", "trainer.lr=3e-2"],
    "qtha_mpo": ["adapter=qtha", "adapter.variant=mpo", "adapter.bottleneck=16", "adapter.n_cores=2", "trainer.lr=3e-2"],
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, object]]:
    tmp = tmp_path_factory.mktemp("export")
    out = {}
    for kind, extra in RUNS.items():
        overrides = tiny_overrides(tmp, "eval.enabled=false", "trainer.max_steps=3", f"name=exp_{kind}", *extra)
        cfg = compose_checked(overrides)
        run = train(cfg, overrides)
        assert run.record.status == "ok", run.record.error
        out[kind] = (run.path, cfg)
    return out


def _qtha_logits(runs: dict, kind: str) -> torch.Tensor:
    path, cfg = runs[kind]
    model, _ = build_model(cfg, json.loads(path.read_text())["adapter_path"])
    with torch.no_grad():
        return model.eval()(input_ids=_ids()).logits


def _ids() -> torch.Tensor:
    return torch.randint(0, 256, (2, 11), generator=torch.Generator().manual_seed(3))


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(input_ids=_ids()).logits


def test_every_run_saves_a_self_describing_adapter_folder(runs):
    path, cfg = runs["qtha"]
    folder = Path(json.loads(path.read_text())["adapter_path"]).parent
    assert sorted(p.name for p in folder.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    saved = json.loads((folder / CONFIG_FILE).read_text())
    assert saved["format"] == "qtha-adapter" and saved["adapter"]["name"] == "qtha"
    assert saved["adapter"]["bottleneck"] == 16 and saved["quantum"]["backend"] == cfg.quantum.backend
    assert saved["base_model_name_or_path"] is None  # the tiny random model has no name outside qtha
    assert len(saved["wrapped_modules"]) == 2 * len(cfg.adapter.target_modules)


@pytest.mark.parametrize("kind", ["lora", "dora"])
def test_peft_export_loads_in_peft_with_no_key_warnings_and_equal_logits(runs, kind, tmp_path):
    out = export(runs[kind][0], "peft", tmp_path / "peft")
    config = json.loads((out / CONFIG_FILE).read_text())
    assert config["peft_type"] == "LORA" and config["use_dora"] is (kind == "dora")
    base = AutoModelForCausalLM.from_pretrained(config["base_model_name_or_path"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = PeftModel.from_pretrained(base, out)
    assert not [w for w in caught if "key" in str(w.message).lower()], [str(w.message) for w in caught]
    assert any(p.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)  # trained, not the init
    torch.testing.assert_close(_logits(model), _qtha_logits(runs, kind), **TOL)


@pytest.mark.parametrize("kind", ["lora", "dora"])
def test_qtha_loads_a_peft_folder_it_exported(runs, kind, tmp_path):
    out = export(runs[kind][0], "peft", tmp_path / "peft")
    base = AutoModelForCausalLM.from_pretrained(out / "base_model")
    model = qtha.load_adapter(base, out)
    assert len(adapter_layers(model)) == 4
    torch.testing.assert_close(_logits(model), _qtha_logits(runs, kind), **TOL)


@pytest.mark.parametrize(("dora", "targets"), sampled([(d, t) for t in (["q_proj", "v_proj"], "all-linear",
                                                                        r".*\.layers\.1\..*_proj") for d in (False, True)], 3))
def test_qtha_loads_a_folder_peft_wrote(tmp_path, dora, targets):
    """The reverse with peft writing: any of its targeting forms, rsLoRA scaling included."""
    torch.manual_seed(2)
    theirs = get_peft_model(tiny_llama(torch.float32), LoraConfig(r=4, lora_alpha=6, target_modules=targets,
                                                                  use_dora=dora, use_rslora=True))
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            if "lora_B" in name or "magnitude" in name:
                p.add_(torch.randn_like(p) * 0.05)
    theirs.save_pretrained(tmp_path / "theirs")
    mine = qtha.load_adapter(tiny_llama(torch.float32), tmp_path / "theirs")
    ids = batch()
    with torch.no_grad():
        torch.testing.assert_close(mine(input_ids=ids).logits, theirs.eval()(input_ids=ids).logits, **TOL)
    assert {n for n, _ in adapter_layers(mine)} == {n.removeprefix("base_model.model.")
                                                   for n, m in theirs.named_modules() if hasattr(m, "lora_A")}


@pytest.mark.parametrize("kind", ["lora", "dora", "quanta", "qtha_mpo"])
def test_merged_export_is_a_plain_transformers_model_with_equal_logits(runs, kind, tmp_path):
    out = export(runs[kind][0], "merged", tmp_path / "merged")
    assert not (out / CONFIG_FILE).exists() and (out / "config.json").is_file() and (out / "tokenizer.json").is_file()
    merged = AutoModelForCausalLM.from_pretrained(out)
    assert not adapter_layers(merged)
    torch.testing.assert_close(_logits(merged), _qtha_logits(runs, kind), **TOL)


def test_qtha_folder_attaches_a_nonmergeable_adapter_without_hydra(runs, tmp_path):
    out = export(runs["qtha"][0], "qtha", tmp_path / "qtha")
    adapter, quantum, _, _ = read_adapter_dir(out)
    assert adapter.name == "qtha" and adapter.variant == "full" and quantum is not None
    model = qtha.load_adapter(AutoModelForCausalLM.from_pretrained(out / "base_model"), out)
    torch.testing.assert_close(_logits(model), _qtha_logits(runs, "qtha"), **TOL)


@pytest.mark.parametrize(("kind", "args", "message"), [
    ("qtha", ["--format", "merged"], "adapter=qtha adapter.variant=full cannot be merged"),
    ("qtha", ["--format", "peft"], "--format peft holds LoRA and DoRA, not adapter=qtha"),
    ("quanta", ["--format", "peft"], "not adapter=quanta"),
])
def test_an_impossible_export_is_one_line_and_writes_nothing(runs, kind, args, message, tmp_path, capsys):
    assert main([str(runs[kind][0]), *args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists() and not list(tmp_path.iterdir())


def test_an_export_never_overwrites(runs, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="already exists and is not an empty folder"):
        export(runs["lora"][0], "peft", tmp_path / "out")
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"


def test_the_adapter_file_finds_its_record(runs, tmp_path):
    path, _ = runs["lora"]
    adapter_file = json.loads(path.read_text())["adapter_path"]
    out = export(adapter_file, "qtha", tmp_path / "q", results_dirs=[path.parents[2]])
    assert (out / WEIGHTS_FILE).is_file()


@pytest.mark.parametrize(("edit", "message"), sampled([
    ({"format_version": 99}, "neither a qtha adapter config"),
    ({"adapter": {"name": "nope"}}, "adapter.name='nope'"),
    ({"adapter": {"name": "qtha", "colour": 1}}, "'colour' is not a field of QTHAConfig"),
    ({"adapter": {"name": "qtha", "rank": 0}}, "adapter.rank"),
], 2))
def test_a_bad_adapter_folder_is_a_one_line_error(runs, tmp_path, edit, message):
    out = export(runs["qtha"][0], "qtha", tmp_path / "q")
    config = json.loads((out / CONFIG_FILE).read_text())
    (out / CONFIG_FILE).write_text(json.dumps({**config, **edit}))
    with pytest.raises(ConfigError, match=message):
        qtha.load_adapter(tiny_llama(torch.float32), out)


@pytest.mark.parametrize(("edit", "message"), sampled([
    ({"bias": "all"}, "bias='all' is a peft option qtha does not implement"),
    ({"rank_pattern": {"q_proj": 8}}, "rank_pattern"),
    ({"peft_type": "IA3"}, "peft_type='IA3'"),
], 3))
def test_peft_options_qtha_does_not_implement_are_refused(tmp_path, edit, message):
    theirs = get_peft_model(tiny_llama(torch.float32), LoraConfig(r=2, target_modules=["q_proj"]))
    theirs.save_pretrained(tmp_path / "theirs")
    config = json.loads((tmp_path / "theirs" / CONFIG_FILE).read_text())
    (tmp_path / "theirs" / CONFIG_FILE).write_text(json.dumps({**config, **edit}))
    with pytest.raises(ConfigError, match=message):
        qtha.load_adapter(tiny_llama(torch.float32), tmp_path / "theirs")


def test_a_merged_folder_loads_where_qtha_cannot_be_imported(runs, tmp_path, python_process):
    out = export(runs["quanta"][0], "merged", tmp_path / "merged")
    script = ("import sys; sys.modules['qtha'] = None\n"  # any `import qtha` now fails
              "import torch; from transformers import AutoModelForCausalLM\n"
              f"model = AutoModelForCausalLM.from_pretrained({str(out)!r}).eval()\n"
              "ids = torch.randint(0, 256, (2, 11), generator=torch.Generator().manual_seed(3))\n"
              f"torch.save(model(input_ids=ids).logits.detach(), {str(tmp_path / 'logits.pt')!r})\n")
    done = python_process(["-c", script])
    assert done.returncode == 0, done.stderr[-2000:]
    torch.testing.assert_close(torch.load(tmp_path / "logits.pt"), _qtha_logits(runs, "quanta"), **TOL)


@pytest.fixture(scope="module")
def smollm2_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, object]]:
    """One-step LoRA and DoRA runs on the embedded SmolLM2 (lr high enough that B moves off zero)."""
    tmp = tmp_path_factory.mktemp("export_smollm2")
    out = {}
    for kind in ("lora", "dora"):
        overrides = tiny_overrides(tmp, "model=smollm2_135m", f"adapter={kind}", "eval.enabled=false",
                                   "trainer.max_steps=1", "trainer.warmup_steps=0", "trainer.lr=1e-2",
                                   "data.size=2", "data.test_size=2", f"name=exp_{kind}")
        run = train(compose_checked(overrides), overrides)
        assert run.record.status == "ok", run.record.error
        out[kind] = (run.path, compose_checked(overrides))
    return out


@pytest.mark.parametrize("kind", ["lora", "dora"])
def test_peft_round_trip_on_smollm2(smollm2, smollm2_runs, kind, tmp_path):
    """The embedded model: the export names the converted GGUF cache, which transformers loads offline."""
    out = export(smollm2_runs[kind][0], "peft", tmp_path / "peft")
    config = json.loads((out / CONFIG_FILE).read_text())
    assert Path(config["base_model_name_or_path"], "config.json").is_file()
    base = AutoModelForCausalLM.from_pretrained(config["base_model_name_or_path"], local_files_only=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = PeftModel.from_pretrained(base, out)
    assert not [w for w in caught if "key" in str(w.message).lower()], [str(w.message) for w in caught]
    torch.testing.assert_close(_logits(model), _qtha_logits(smollm2_runs, kind), **TOL)


def test_a_regex_target_is_written_as_the_wrapped_modules_and_peft_wraps_exactly_those(tmp_path):
    """peft has no spelling of qtha's ``re:`` entries beside its own single regex: the export lists the modules."""
    from safetensors.torch import save_file

    from qtha.adapters import adapter_state_dict, inject_adapters
    from qtha.adapters.lora import LoRAConfig
    from qtha.interop.peft_format import peft_config, to_peft_state

    cfg = LoRAConfig(rank=2, alpha=4.0, target_modules=[r"re:.*\.layers\.1\.self_attn\.(q|v)_proj", "down_proj"])
    mine = tiny_llama(torch.float32)
    wrapped = inject_adapters(mine, cfg)
    with torch.no_grad():
        for name, p in mine.named_parameters():
            if "lora_B" in name:
                p.add_(torch.randn_like(p) * 0.05)
    config = peft_config(cfg, wrapped, None)
    assert config["target_modules"] == sorted(wrapped) and len(wrapped) == 4  # q, v of layer 1; down_proj of both
    (tmp_path / "p").mkdir()
    save_file(to_peft_state(adapter_state_dict(mine)), str(tmp_path / "p" / WEIGHTS_FILE))
    (tmp_path / "p" / CONFIG_FILE).write_text(json.dumps(config))
    theirs = PeftModel.from_pretrained(tiny_llama(torch.float32), tmp_path / "p")
    assert {n.removeprefix("base_model.model.") for n, m in theirs.named_modules() if hasattr(m, "lora_A")} == set(wrapped)
    ids = batch()
    with torch.no_grad():
        torch.testing.assert_close(theirs.eval()(input_ids=ids).logits, mine.eval()(input_ids=ids).logits, **TOL)
