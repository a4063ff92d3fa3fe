"""No credential reaches a file: a run with secrets planted in the environment and in an override leaves no copy
of them in anything it writes — records, predictions, Hydra's output folder, logs, the W&B offline run."""
from __future__ import annotations

from pathlib import Path

from conftest import clean_env, tiny_overrides

WANDB_SECRET = "plantedWandbKey0123456789abcdef"
HF_SECRET = "hf_plantedHubToken9876543210zyx"


def test_every_file_a_run_writes_is_free_of_planted_secrets(tmp_path, python_process):
    data_dir = tmp_path / "data" / WANDB_SECRET / HF_SECRET  # a credential pasted into a path, as users do
    data_dir.mkdir(parents=True)
    (data_dir / "chat.jsonl").write_text("".join(f'{{"prompt": "q{i}", "response": "a{i}"}}\n' for i in range(8)))
    env = {**clean_env(tmp_path), "WANDB_API_KEY": WANDB_SECRET, "HF_TOKEN": HF_SECRET, "WANDB_MODE": "offline"}
    args = [o for o in tiny_overrides(tmp_path, "trainer.max_steps=2") if o != "logger=csv"]
    args += ["logger=wandb", "logger.mode=offline", "data=jsonl", f"data.path={data_dir / 'chat.jsonl'}",
             "data.size=4", "data.holdout_size=2", "data.test_size=2", f"hydra.run.dir={tmp_path / 'outputs' / 'hydra'}"]
    proc = python_process(["-m", "qtha.run", *args], env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = [p for p in tmp_path.rglob("*") if p.is_file() and data_dir not in p.parents]
    assert any(p.suffix == ".wandb" for p in written) and any(p.name.endswith(".json") for p in written)
    for path in written:
        data = path.read_bytes()
        for secret in (WANDB_SECRET, HF_SECRET):
            assert secret.encode() not in data, f"{secret} in {path}"
            assert secret not in str(path.relative_to(tmp_path)), path
