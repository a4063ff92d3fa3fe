"""Evaluation by generation: batched greedy decoding, metrics in the record, `python -m qtha.eval`."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import sampled, tiny_overrides
from qtha import eval as qeval
from qtha.backbone import load_backbone
from qtha.compose import compose_checked
from qtha.errors import ConfigError
from qtha.generation import generate, prompt_ids
from qtha.results import load_record
from qtha.train import train

CONVERSATIONS = [
    [{"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": "5"}],
    [{"role": "user", "content": "A much longer question about apples, pears and plums, all of them?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
]


@pytest.fixture(scope="module")
def tiny():
    cfg = compose_checked(["model=tiny_llama"])
    torch.manual_seed(0)
    return load_backbone(cfg.model)


def test_left_padded_batches_generate_what_single_prompts_do(tiny):
    model, tok = tiny
    batched = generate(model, tok, CONVERSATIONS, max_new_tokens=6, batch_size=3, max_prompt_length=64)
    single = [generate(model, tok, [c], max_new_tokens=6, batch_size=1, max_prompt_length=64)[0]
              for c in CONVERSATIONS]
    assert [g.text for g in batched] == [g.text for g in single]
    assert [g.new_tokens for g in batched] == [g.new_tokens for g in single]


def test_prompt_excludes_the_reference_turn_and_is_left_truncated(tiny):
    _, tok = tiny
    full = prompt_ids(tok, CONVERSATIONS[0], 10_000)
    assert "5" not in tok.decode(full).split("assistant")[-1]
    assert tok.decode(full).rstrip().endswith("assistant")
    assert prompt_ids(tok, CONVERSATIONS[1], 7) == prompt_ids(tok, CONVERSATIONS[1], 10_000)[-7:]


def test_truncation_flag_means_the_token_budget_ran_out(tiny):
    model, tok = tiny
    gens = generate(model, tok, CONVERSATIONS[:2], max_new_tokens=4, batch_size=2, max_prompt_length=64)
    for g in gens:
        assert g.new_tokens <= 4
        assert g.truncated == (g.new_tokens == 4)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("evalrun")
    overrides = tiny_overrides(tmp, "trainer.max_steps=2", "data.test_size=5", "eval.batch_size=2")
    cfg = compose_checked(overrides)
    run = train(cfg, overrides)
    assert run.record.status == "ok", run.record.error
    return tmp, cfg, run


def test_run_record_has_generation_metrics_and_predictions(trained):
    _, cfg, run = trained
    record = run.record
    m = record.metrics
    for name in ("accuracy", "strict_accuracy", "ctc", "ac"):   # synthetic maths rows carry answers
        assert 0.0 <= m[name] <= 100.0
    assert record.generation["rows"] == 5 and record.generation["greedy"] is True
    assert record.generation["max_new_tokens"] == 8
    assert "metric_notes" in record.generation
    rows = [json.loads(line) for line in Path(record.predictions_path).read_text().splitlines()]
    assert len(rows) == 5
    assert {"reference", "prediction", "truncated", "answer", "extracted"} <= set(rows[0])
    assert Path(record.predictions_path) == run.path.with_name(f"{run.path.stem}.predictions.jsonl")


def test_reevaluation_reproduces_the_run_and_appends_to_the_record(trained, capsys):
    tmp, cfg, run = trained
    before = load_record(run.path)
    assert qeval.main([str(run.path), "--tag", "again"]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1][len("qtha: "):])
    assert last["record"] == str(run.path) and last["tag"] == "again"
    after = load_record(run.path)
    assert after.metrics == before.metrics                   # the run's own metrics stay as they were
    (entry,) = after.evaluations
    assert entry["tag"] == "again" and entry["changes"] == {} and entry["config_hash"] == run.record.config_hash
    assert entry["metrics"]["loss"] == pytest.approx(run.record.metrics["loss"], rel=1e-5)
    assert entry["data_fingerprint"] == run.record.data_fingerprint
    assert set(entry["timings"]) == {"load_s", "validate_s", "generate_s", "score_s"}
    original = Path(run.record.predictions_path).read_text().splitlines()
    again = Path(entry["predictions_path"]).read_text().splitlines()
    assert [json.loads(a)["prediction"] for a in again] == [json.loads(o)["prediction"] for o in original]


def test_checkpoint_path_finds_its_record_and_overrides_apply(trained):
    tmp, cfg, run = trained
    assert qeval.main([run.record.adapter_path, "eval.limit=2", "--results-dir", cfg.results_dir]) == 0
    after = load_record(run.path)
    entry = [e for e in after.evaluations if e["tag"] == "eval.limit=2"][0]
    assert entry["generation"]["rows"] == 2 and entry["changes"] == {"eval.limit": 2}


@pytest.mark.parametrize("args,message", sampled([
    (["adapter.rank=8"], "adapter.rank cannot change at evaluation"),
    (["adapter=qtha"], "cannot change at evaluation (the saved weights fix model and adapter)"),
    (["model=smollm2_135m"], "model.arch.hidden_size cannot change at evaluation"),
    (["eval.no_such_key=1"], "eval.no_such_key is not a config key"),
    (["eval.limit=0"], "eval.limit=0 must be > 0"),
    (["eval.metrics=[bleu5]"], "eval.metrics='bleu5' is not allowed"),
    (["quantum=noisy"], "quantum='noisy' is unknown; allowed: default_qubit"),
], 3))
def test_bad_evaluation_overrides_are_one_line_errors(trained, capsys, args, message):
    _, cfg, run = trained
    assert qeval.main([str(run.path), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_quantum_preset_replaces_the_whole_qnn_execution(trained):
    _, cfg, run = trained
    saved = load_record(run.path)
    noisy = qeval.eval_config(saved, ["quantum=noisy_paper_low"])[0].quantum
    assert (noisy.backend, noisy.device, noisy.noise, noisy.p1, noisy.p2) == ("pennylane", "default.mixed",
                                                                             "depolarizing", 0.01, 0.01)
    shots = qeval.eval_config(saved, ["quantum=noisy_paper_low", "quantum=shots_1000"])[0].quantum
    assert (shots.device, shots.shots, shots.noise, shots.readout) == ("default.qubit", 1000, "none", None)


def test_evaluation_changes_apply_to_the_recorded_config_not_to_todays_defaults(trained):
    """A key the recorded run set keeps its recorded value unless an override names it."""
    _, cfg, run = trained
    saved = load_record(run.path)
    saved.config["eval"]["max_new_tokens"] = 5          # as if the run had been made with another budget
    evaluated, delta = qeval.eval_config(saved, ["eval.limit=1"])
    assert evaluated.eval.max_new_tokens == 5 and evaluated.eval.limit == 1 and delta == {"eval.limit": 1}
    assert qeval.eval_config(saved, ["eval.max_new_tokens=8"])[0].eval.max_new_tokens == 8


def test_unknown_targets_are_one_line_errors(tmp_path, capsys):
    assert qeval.main([str(tmp_path / "missing.json")]) == 2
    assert "does not exist" in capsys.readouterr().err
    stray = tmp_path / "stray.safetensors"
    stray.write_bytes(b"")
    assert qeval.main([str(stray), "--results-dir", str(tmp_path)]) == 2
    assert "no record under" in capsys.readouterr().err


def test_eval_config_is_validated_before_any_model_loads(tmp_path):
    with pytest.raises(ConfigError, match="eval.max_new_tokens=0 must be > 0"):
        compose_checked(tiny_overrides(tmp_path, "eval.max_new_tokens=0"))


@pytest.mark.parametrize("experiment,metrics", [
    ("cpsycound", ("bleu4", "rouge1", "rouge2", "rougeL")),
    ("math", ("accuracy", "strict_accuracy", "ctc", "ac")),
])
def test_paper_experiments_train_and_score_on_the_shared_slices(shared_data, tmp_path, experiment, metrics):
    overrides = tiny_overrides(tmp_path, f"experiment={experiment}", "model=tiny_llama", "data.size=4",
                               "data.test_size=3", "data.max_length=128", "trainer.max_steps=2", "data.val_size=4")
    record = train(compose_checked(overrides), [f"experiment={experiment}"]).record
    assert record.status == "ok", record.error
    assert record.experiment == experiment
    for name in metrics:
        assert 0.0 <= record.metrics[name] <= 100.0
    assert record.generation["rows"] == 3
    assert record.data_summary["train"]["rows"] == 4


def test_a_maths_run_reevaluates_on_cmath_by_swapping_the_data_group(shared_data, tmp_path, capsys):
    """``qtha.eval <gsm8k record> data=cmath``: the group swap composes as in qtha.run (path and hub id follow)."""
    overrides = tiny_overrides(tmp_path, "experiment=math", "data.size=4", "data.test_size=3", "data.max_length=128",
                               "trainer.max_steps=1", "data.val_size=4")
    run = train(compose_checked(overrides), overrides)
    assert run.record.config["data"]["name"] == "gsm8k"
    assert qeval.main([str(run.path), "data=cmath", "eval.limit=2"]) == 0
    (entry,) = load_record(run.path).evaluations
    assert entry["tag"] == "data=cmath__eval.limit=2"
    assert entry["changes"]["data.name"] == "cmath" and entry["changes"]["data.hub_id"] == "weitianwen/cmath"
    assert entry["changes"]["data.path"].endswith("/cmath") and entry["generation"]["rows"] == 2
    assert entry["data_fingerprint"] != run.record.data_fingerprint
    preds = [json.loads(line) for line in Path(entry["predictions_path"]).read_text().splitlines()]
    assert all(p["lang"] == "zh" for p in preds)


def test_an_experiments_reevaluations_run_after_training_each_tag_once(tmp_path):
    """``reevaluate: {tag: overrides}``: measured right after the run; a rerun adds only the missing tags."""
    base = tiny_overrides(tmp_path, "trainer.max_steps=1", "eval.max_new_tokens=2")
    first = train(compose_checked([*base, "+reevaluate.one='eval.limit=1'"]), base)
    assert [(e["tag"], e["generation"]["rows"]) for e in first.record.evaluations] == [("one", 1)]
    again = train(compose_checked([*base, "+reevaluate.one='eval.limit=1'", "+reevaluate.two='eval.limit=2'"]), base)
    assert again.reused and again.path == first.path                     # reevaluate is not identity
    assert [(e["tag"], e["generation"]["rows"]) for e in again.record.evaluations] == [("one", 1), ("two", 2)]
    assert load_record(first.path).evaluations[0]["at"] == first.record.evaluations[0]["at"]  # "one" not redone
