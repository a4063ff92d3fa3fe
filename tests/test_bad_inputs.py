"""Every bad input we know of fails before any model is loaded, with one line naming it and what is allowed.

``BAD_INPUTS`` is the reference list (overrides -> a fragment of the message): add a row whenever
a new way to get a run wrong is found. All rows compose in-process through ``compose_checked``
(what ``python -m qtha.run`` calls for every job before Hydra launches one); a few also go
through the real CLI: exit code 2, a single stderr line, no traceback, no record.
``{data}`` stands for a folder of small JSONL files written by the ``data_dir`` fixture.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pennylane as qml
import pytest
import torch

from conftest import sampled
from qtha.compose import compose_checked, group_options
from qtha.errors import ConfigError

JSONL = ("data=jsonl", "data.holdout_size=1", "data.size=1", "data.test_size=1")
BAD_INPUTS: list[tuple[tuple[str, ...], str]] = [
    # --- names: config groups, keys, types
    (("adapter=foo",), f"adapter='foo' is unknown; allowed: {', '.join(group_options('adapter'))}"),
    (("model=gpt5",), f"model='gpt5' is unknown; allowed: {', '.join(group_options('model'))}"),
    (("data=nope",), f"data='nope' is unknown; allowed: {', '.join(group_options('data'))}"),
    (("quantum=nope",), f"quantum='nope' is unknown; allowed: {', '.join(group_options('quantum'))}"),
    (("logger=nope",), f"logger='nope' is unknown; allowed: {', '.join(group_options('logger'))}"),
    (("adapter.rnk=4",), "adapter.rnk is not a config key; allowed keys in adapter: alpha, dropout, name, rank"),
    (("trainer.max_step=3",), "trainer.max_step is not a config key; allowed keys in trainer:"),
    (("adapter.rank=abc",), "adapter.rank='abc' is not a valid integer"),
    (("trainer.lr=fast",), "trainer.lr='fast' is not a valid float"),
    (("resume=maybe",), "resume='maybe' is not a valid bool"),
    (("adapter.target_modules=q_proj",), "adapter.target_modules='q_proj' is not a list; allowed:"),
    (("name=a/b",), "name='a/b' is not a safe folder name; allowed: 1-100 letters, digits, '_', '.', '-'"),
    (("name=..",), "name='..' is not a safe folder name"),
    (("name=" + "x" * 101,), "is not a safe folder name; allowed: 1-100 letters"),
    (("name=a b",), "name='a b' is not a safe folder name"),
    (("+adapter.rnk=8",), "+adapter.rnk is not a config key; allowed keys in adapter: alpha, dropout, name, rank"),
    (("++trainer.max_step=3",), "+trainer.max_step is not a config key; allowed keys in trainer:"),
    (("seed=-1",), "seed=-1 is out of range; allowed: 0..4294967295"),
    # --- model
    (("model.source=ftp",), "model.source='ftp' is not allowed; allowed: gguf, hub, local, tiny"),
    (("model.dtype=int3",), "model.dtype='int3' is not allowed; allowed: float32, bfloat16, float16"),
    (("model=qwen2_7b",), "model=qwen2_7b needs Qwen/Qwen2-7B-Instruct, which is not in the local Hugging Face cache"),
    (("model.arch.hidden_size=0",), "model.arch.hidden_size=0 must be > 0"),
    (("model.arch.num_attention_heads=3",), "num_attention_heads=3, num_key_value_heads=2; allowed: each divisible"),
    # --- adapters
    (("adapter.rank=0",), "adapter.rank=0 must be > 0"),
    (("adapter.alpha=-1",), "adapter.alpha=-1.0 must be > 0"),
    (("adapter.dropout=1.5",), "adapter.dropout=1.5 must be in [0, 1)"),
    (("adapter.target_modules=[]",), "adapter.target_modules is empty; adapter=lora needs at least one module name"),
    (("adapter.target_modules=[no_such_layer]",), "target_modules ['no_such_layer'] match no nn.Linear; available:"),
    (("adapter=qtha", "adapter.bond_dim=0"), "adapter.bond_dim=0 must be a positive int or a list of n_cores-1"),
    (("adapter=qtha", "adapter.bond_dim=[2,2]"), "adapter.bond_dim has 2 values; allowed: one, or n_cores-1=3"),
    (("adapter=qtha", "adapter.n_qubits=21"), "adapter.n_qubits=21 is out of range; allowed: 1..20"),
    (("adapter=qtha", "adapter.qnn_layers=0"), "adapter.qnn_layers=0 must be > 0"),
    (("adapter=qtha", "adapter.bottleneck=0"), "adapter.bottleneck=0 must be > 0"),
    (("adapter=qtha", "adapter.n_cores=7"), "cannot split dim=64 into n=7 factors > 1"),
    (("adapter=qtha", "adapter.variant=nope"), "adapter.variant='nope' is not allowed; allowed: full, mpo, mpo_mlp"),
    (("adapter=qtha", "adapter.ansatz=nope"), "adapter.ansatz='nope' is not allowed; allowed: hea, qtha"),
    (("adapter=qtha", "adapter.branch=mlp"), "adapter.branch='mlp' is not allowed; allowed: qnn, silu_mlp"),
    (("adapter=qtha", "adapter.init=xavier"), "adapter.init='xavier' is not allowed; allowed: authors, spec_v1"),
    (("adapter=qtha", "adapter.branch=silu_mlp", "adapter.mlp_layers=0"), "adapter.mlp_layers=0 must be > 0"),
    (("adapter=quanta_spec", "adapter.n_axes=9"), "QuanTA cannot factor d_in=64 into 9 axes"),
    (("adapter=quanta_spec", "adapter.axes_in=[3,5]"),
     "QuanTA axes_in=[3, 5] multiplies to 15, but the layer's dimension"),
    (("adapter=quanta", "adapter.axes_in=[8,8]"), "adapter.axes_in/axes_out need adapter.layout=exact"),
    (("adapter=quanta", "adapter.layout=tiled"), "adapter.layout='tiled' is not allowed; allowed: padded, exact"),
    (("adapter=quanta", "adapter.n_axes=1"), "adapter.n_axes=1 must be >= 2 (one pair of axes), or null for the rank"),
    # --- data
    (("data.size=0",), "data.size=0 must be > 0"),
    (("data.size=5000",), "data.size=5000 is outside the training pool of data=synthetic_math (4000 rows)"),
    (("data.max_length=8",), "data.max_length=8 is too short; allowed: >= 16 tokens"),
    (("data.languages=[fr]",), "data.languages=['fr']: unknown language 'fr'; allowed: ('en', 'zh')"),
    (("data.difficulty=hard",), "data.difficulty='hard' is not allowed; allowed: standard, easy"),
    (("data.val_size=4000",), "data.val_size=4000 does not fit the training pool of data=synthetic_math (4000 rows)"),
    (("data=cmath",), "data=cmath is an evaluation-only set (no solutions to train on)"),
    (("data=jsonl", "data.path={data}/absent.jsonl"), "data=jsonl has no local data at"),
    ((*JSONL, "data.path={data}/malformed.jsonl"), "malformed.jsonl:3: invalid JSON"),
    ((*JSONL, "data.path={data}/latin1.jsonl"), "latin1.jsonl:2: not UTF-8 text (byte 0xe9 at column 16)"),
    ((*JSONL, "data.path={data}/random.jsonl"), "random.jsonl:1: not UTF-8 text (byte 0xff at column 1)"),
    ((*JSONL, "data.path={data}/no_response.jsonl"), "field 'response' must be non-empty text, got None"),
    ((*JSONL, "data.path={data}/empty_response.jsonl"), "field 'response' must be non-empty text, got '  '"),
    ((*JSONL, "data.path={data}/user_last.jsonl"), "the last message must be the assistant's (the training target)"),
    (("data=jsonl", "data.holdout_size=1", "data.size=10", "data.path={data}/good.jsonl"),
     "data.size=10 is outside the training pool of data=jsonl (3 rows); allowed: 1..3"),
    (("data=jsonl", "data.size=1", "data.path={data}/good.jsonl"),
     "data=jsonl has 4 rows, too few to hold out data.holdout_size=300"),
    # --- quantum
    (("quantum.backend=qiskit",), "quantum.backend='qiskit' is not allowed; allowed: torch, pennylane"),
    (("quantum=default_qubit", "quantum.device=nope.device"),
     "quantum.device='nope.device' is not an installed PennyLane device; allowed: default.clifford"),
    (("quantum=default_qubit", "quantum.device=default.gaussian"),
     "quantum.device=default.gaussian does not run qubit circuits; allowed: a qubit device"),
    (("quantum=default_qubit", "quantum.shots=-1"), "quantum.shots=-1 is invalid; allowed: a positive int, or null"),
    (("quantum.shots=100",), "quantum.shots=100 needs a sampling device; allowed: quantum.backend=pennylane"),
    (("quantum=default_qubit", "quantum.device=default.mixed", "quantum.diff_method=adjoint"),
     "quantum.diff_method=adjoint is not supported by quantum.device=default.mixed"),
    (("quantum=default_qubit", "quantum.diff_method=backprop", "quantum.shots=100"),
     "quantum.diff_method=backprop needs exact expectation values but quantum.shots=100"),
    (("quantum=lightning_qubit", "quantum.shots=100"),
     "quantum.diff_method=adjoint needs exact pure states, not quantum.shots=100"),
    (("quantum.diff_method=magic",), "quantum.diff_method='magic' is not allowed; allowed: best, backprop"),
    (("quantum.dtype=float16",), "quantum.dtype='float16' is not allowed; allowed: float32, float64"),
    # --- trainer
    (("trainer.lr=-1",), "trainer.lr=-1.0 must be > 0"),
    (("trainer.lr=inf",), "trainer.lr=inf must be a finite number > 0"),
    (("trainer.lr=nan",), "trainer.lr=nan must be > 0"),
    (("trainer.max_steps=-1",), "trainer.max_steps=-1 is out of range; allowed: 0..10,000,000"),
    (("trainer.max_steps=100000000",), "trainer.max_steps=100000000 is out of range; allowed: 0..10,000,000"),
    (("trainer.max_steps=1e20",), "trainer.max_steps='1e+20' is not a valid integer"),
    (("trainer.lr=2",), "trainer.lr=2 is above the ceiling; allowed: 0 < lr <= 1"),
    (("trainer.lr=1e30",), "trainer.lr=1e+30 is above the ceiling; allowed: 0 < lr <= 1"),
    (("trainer.weight_decay=-1",), "trainer.weight_decay=-1.0 must be a finite number >= 0"),
    (("trainer.weight_decay=nan",), "trainer.weight_decay=nan must be a finite number >= 0"),
    (("trainer.gradient_clip_val=nan",), "trainer.gradient_clip_val must be >= 0"),
    (("trainer.batch_size=0",), "trainer.batch_size=0 must be > 0"),
    (("trainer.accumulate_grad_batches=0",), "trainer.accumulate_grad_batches=0 must be > 0"),
    (("trainer.checkpoint_every=0",), "trainer.checkpoint_every=0 must be > 0"),
    (("trainer.precision=fp8",), "trainer.precision='fp8' is not allowed; allowed: auto, 32, 32-true, bf16-mixed"),
    (("trainer.accelerator=tpu",), "trainer.accelerator='tpu' is not allowed; allowed: cpu, gpu, cuda, mps, auto"),
    (("trainer.devices=0",), "trainer.devices=0 is not allowed; allowed: a count >= 1, -1 (all), auto"),
    (("trainer.strategy=nope",), "trainer.strategy='nope' is not allowed; allowed: auto, ddp"),
    (("trainer.num_workers=-1",), "trainer.num_workers=-1 must be >= 0"),
    (("trainer.warmup_steps=-1",), "trainer.warmup_steps and trainer.gradient_clip_val must be >= 0"),
    (("trainer.min_lr_ratio=2",), "trainer.min_lr_ratio in [0, 1] (got 6, 1.0, 2.0)"),
    (("trainer.kill_at_step=-1",), "trainer.kill_at_step=-1 must be >= 0"),
    # --- logger, evaluation
    (("logger.kind=mlflow",), "logger.kind='mlflow' is not allowed; allowed: wandb, csv, none"),
    (("logger.mode=sometimes",), "logger.mode='sometimes' is not allowed; allowed: offline, online, disabled"),
    (("logger.timeout_s=0",), "logger.timeout_s=0.0 must be > 0"),
    (("eval.metrics=[nope]",), "eval.metrics='nope' is not allowed; allowed: bleu4, rouge1"),
    (("eval.limit=0",), "eval.limit=0 must be > 0, or null for every test row"),
    (("eval.max_new_tokens=0",), "eval.max_new_tokens=0 must be > 0"),

    # --- grown for issue 14: every value below used to pass validation and fail after the model loaded, hang,
    # allocate without bound, or print a traceback
    (("~adapter",), "adapter is unset; allowed: adapter=<dora|lora|"),
    (("experiment=nope",), "experiment='nope' is unknown; allowed: bond_dim_sweep"),
    (("+foo=1",), "+foo is not a config key; allowed keys: adapter, adapter_dir, allow_hub"),
    (("allow_hub=maybe",), "allow_hub='maybe' is not a valid bool"),
    (("seed=1.5",), "seed='1.5' is not a valid integer"),
    (("trainer.lr=3e-4,1e-3",), "trainer.lr=3e-4,1e-3 lists several values; allowed: -m (a sweep over them)"),
    (("force=true", "resume=true"), "force=true and resume=true contradict each other"),
    (("results_dir={data}/good.jsonl",), "results_dir='{data}/good.jsonl' is a file; allowed: a folder"),
    (("work_dir={data}/good.jsonl/sub",), "cannot be written ({data}/good.jsonl is not a writable folder)"),
    (("work_dir=",), "work_dir is empty; allowed: a folder path"),
    (("+reevaluate.noisy='quantum=nope'",), "reevaluate.noisy: quantum='nope' is unknown; allowed: default_qubit"),
    (("+reevaluate.noisy='trainer.lr=5'",), "reevaluate.noisy: trainer.lr=5 is above the ceiling"),
    (("+reevaluate.other='model=smollm2_135m'",), "reevaluate.other: model cannot change at evaluation"),
    (("+reevaluate.other='adapter.rank=8'",), "reevaluate.other: adapter cannot change at evaluation"),
    (("model.source=local", "model.path={data}/absent"), "model.path='{data}/absent' holds no config.json"),
    (("model=smollm2_135m", "model.gguf_package=no_such_pkg"), "GGUF package 'no_such_pkg' is not installed"),
    (("model=smollm2_135m", "model.gguf_file=nope.gguf"), "expected one file matching 'nope.gguf' in package"),
    (("model.arch.model_type=gpt99",), "model.arch.model_type='gpt99' is not a causal-LM type transformers knows"),
    (("model.arch.hidden_size=1000000",), "GiB random model; allowed: at most"),
    (("model.arch.num_hidden_layers=100000",), "GiB random model; allowed: at most"),
    (("model.name=",), "model.name is empty; allowed: the model's short name"),
    (("model.arch.vocab_size=0",), "model.arch.vocab_size=0 must be > 0"),
    (("model.arch.num_key_value_heads=0",), "model.arch.num_key_value_heads=0 must be > 0"),
    (("model.arch.tie_word_embeddings=maybe",), "model.arch.tie_word_embeddings='maybe' is not a valid bool"),
    (("model.arch.max_position_embeddings=64",), "data.max_length=192 is longer than model=tiny_llama can attend"),
    (("model.source=hub", "model.hub_id=null"), "has source=hub but no model.hub_id"),
    (("adapter.rank=100000",), "adapter=lora would train 44,800,000 parameters, more than the"),
    (("adapter=qtha", "adapter.bottleneck=100000"), "adapter=qtha would train"),
    (("adapter=qtha", "adapter.qnn_layers=100000"), "adapter.qnn_layers=100000 is above the ceiling; allowed: 1..256"),
    (("adapter=quanta_spec", "adapter.axes_in=[]"), "adapter.axes_in=[] is empty; allowed: null"),
    (("adapter.alpha=inf",), "adapter.alpha=inf must be a finite number > 0"),
    (("adapter.dropout=nan",), "adapter.dropout=nan must be in [0, 1)"),
    (("adapter.rank=1.5",), "adapter.rank='1.5' is not a valid integer"),
    (("adapter=qtha", "adapter.n_qubits=0"), "adapter.n_qubits=0 is out of range; allowed: 1..20"),
    (("adapter=qtha", "adapter.bond_dim=[2,2,0]"), "adapter.bond_dim=[2, 2, 0] must be a positive int or a list"),
    (("adapter=dora", "adapter.rank=0"), "adapter.rank=0 must be > 0"),
    (("data.data_seed=-1",), "data.data_seed=-1 is out of range; allowed: 0..4294967295"),
    (("data.pool_size=100000000",), "is above the ceiling of the generator; allowed: at most 1,000,000 together"),
    (("data.test_size=100000000",), "is above the ceiling of the generator; allowed: at most 1,000,000 together"),
    (("data.pool_size=1e8",), "data.pool_size='100000000.0' is not a valid integer"),
    (("data.max_length=100000",), "data.max_length=100000 is longer than model=tiny_llama can attend to"),
    (("data.test_size=0",), "data.test_size=0 must be > 0"),
    (("data.holdout_size=-1",), "data.holdout_size=-1 must be > 0"),
    (("data.languages=[]",), "languages must be a non-empty sequence"),
    (("data.batching=nope",), "data.batching='nope' is not allowed; allowed: random, length"),
    (("data.bucket_batches=0",), "data.bucket_batches=0 is not allowed; allowed: an int >= 1"),
    (("data=jsonl", "data.holdout_size=1", "data.size=1", "data.path={data}/good.jsonl"),
     "data.test_size=32 is more than the 1 test rows of data=jsonl; allowed: 1..1"),
    ((*JSONL, "data.path={data}/list.jsonl"), "list.jsonl:1: expected a JSON object, got list"),
    ((*JSONL, "data.path={data}/number.jsonl"), "number.jsonl:1: field 'prompt' must be non-empty text, got 5"),
    ((*JSONL, "data.path={data}/role.jsonl"), "role.jsonl:1: messages[0] must be {{'role': system|user|assistant"),
    ((*JSONL, "data.path={data}/messages_text.jsonl"), "'messages' must be a non-empty list of {{role, content}}"),
    # --- LLaMA-Factory formats (qtha.data.formats)
    ((*JSONL, "data.format=alpacas"), "data.format='alpacas' is not allowed; allowed: qtha, alpaca, sharegpt"),
    ((*JSONL, "data.format=alpaca", "data.columns.promt=x"), "data.columns.promt is not a config key; allowed keys in"),
    ((*JSONL, "data.format=alpaca", "data.columns.messages=turns"), "data.columns.messages is not a column of "
                                                                     "data.format=alpaca; allowed: history, prompt"),
    ((*JSONL, "data.columns.prompt=q"), "data.columns.prompt is not a column of data.format=qtha; allowed: none"),
    ((*JSONL, "data.format=alpaca", "data.tags.role_tag=r"), "data.tags.role_tag is not a tag of data.format=alpaca"),
    (("data=gsm8k", "data.format=sharegpt"), "data.format=sharegpt needs a dataset that reads any rows; allowed: "
                                             "data=jsonl (data=gsm8k has its own fields)"),
    ((*JSONL, "data.format=alpaca", "data.path={data}/alpaca_bad.json"), "alpaca_bad.json:3: invalid JSON"),
    ((*JSONL, "data.format=alpaca", "data.path={data}/alpaca_no_output.json"),
     "alpaca_no_output.json:2: field 'output' must be the response text, got NoneType"),
    ((*JSONL, "data.format=sharegpt", "data.path={data}/sharegpt_order.jsonl"),
     "sharegpt_order.jsonl:1: conversations[1] has from='human'; expected 'gpt'"),
    ((*JSONL, "data.format=sharegpt", "data.path={data}/sharegpt_tool.jsonl"),
     "sharegpt_tool.jsonl:1: conversations[1] has from='function_call'; expected 'gpt'"),
    ((*JSONL, "data.path={data}/no_fields.jsonl"), "expected 'messages' (a list of {{role, content}}) or 'prompt'"),
    ((*JSONL, "data.path={data}/blank.jsonl"), "data=jsonl has 0 rows, too few to hold out data.holdout_size=1"),
    (("data=jsonl", "data.path={data}"), "data=jsonl has no local data at '{data}'"),
    (("data=jsonl", "data.path=null"), "data=jsonl has no local data because data.path is unset"),
    (("data=cpsycound", "data.max_length=256", "data.path={data}/absent"), "data=cpsycound has no local data at '{data}/absent'"),
    (("trainer.devices=abc",), "trainer.devices='abc' is not allowed; allowed: a count >= 1, -1 (all), auto"),
    (("trainer.devices=100000",), "asks for more cpu devices than this machine has"),
    (("trainer.devices=[0,99999]",), "asks for more cpu devices than this machine has"),
    (("trainer.devices=[]",), "trainer.devices=[] is not allowed"),
    (("trainer.warmup_steps=1000000000000",), "trainer.warmup_steps=1000000000000 is out of range"),
    (("trainer.batch_size=100000000",), "trainer.batch_size=100000000 is above the ceiling; allowed: 1..65,536"),
    (("trainer.accumulate_grad_batches=1000000000",), "trainer.accumulate_grad_batches=1000000000 is above the"),
    (("trainer.num_workers=100000",), "trainer.num_workers=100000 exceeds this machine's"),
    (("trainer.val_check_interval=0",), "trainer.val_check_interval=0 must be > 0"),
    (("trainer.log_every_n_steps=0",), "trainer.log_every_n_steps=0 must be > 0"),
    (("trainer.fault_at_step=-1",), "trainer.fault_at_step=-1 must be >= 0"),
    (("trainer.min_lr_ratio=nan",), "trainer.min_lr_ratio in [0, 1] (got 6, 1.0, nan)"),
    (("trainer.gradient_clip_val=inf",), "trainer.gradient_clip_val must be >= 0"),
    (("trainer.deterministic=maybe",), "trainer.deterministic='maybe' is not a valid bool"),
    (("trainer.lr=0",), "trainer.lr=0.0 must be > 0"),
    (("logger.project=",), "logger.project='' is not a W&B name; allowed: 1-128 characters"),
    (("logger.project=a/b",), "logger.project='a/b' is not a W&B name"),
    (("logger.entity=a:b",), "logger.entity='a:b' is not a W&B name"),
    (("logger.timeout_s=inf",), "logger.timeout_s=inf must be a finite number > 0"),
    (("eval.metrics=[]",), "eval.metrics=[] names no metric; allowed: null (chosen by the data)"),
    (("data=jsonl", "data.holdout_size=2", "data.size=1", "data.test_size=2", "data.path={data}/good.jsonl",
      "eval.metrics=[accuracy]"), "eval.metrics=['accuracy'] score maths answers, but the test rows of data=jsonl"),
    (("eval.max_new_tokens=1000000",), "eval.max_new_tokens=1000000 is longer than model=tiny_llama can attend to"),
    (("eval.batch_size=0",), "eval.batch_size=0 must be > 0"),
    (("eval.enabled=maybe",), "eval.enabled='maybe' is not a valid bool"),
    (("quantum.readout=[[1,0],[0,1]]",), "quantum.readout[0] holds 1 (int); allowed: float values (write 1.0, not 1)"),
    (("quantum=noisy_paper_low", "quantum.readout=[[0.9,0.2],[0.1,0.9]]"), "is not a 2x2 row-stochastic matrix"),
    (("quantum.retries=100000",), "quantum.retries=100000 is invalid; allowed: an int in 0..16"),
    (("quantum.backoff_s=nan",), "quantum.backoff_s=nan is invalid; allowed: seconds in 0..3600"),
    (("quantum.backoff_s=-1",), "quantum.backoff_s=-1.0 is invalid"),
    (("quantum.cache_size=-1",), "quantum.cache_size=-1 is invalid; allowed: an int >= 0"),
    (("quantum.p1=2",), "quantum.p1=2.0 is not a probability; allowed: a number in [0, 1]"),
    (("quantum.noise=amplitude",), "quantum.noise='amplitude' is not allowed; allowed: none, depolarizing"),
    (("quantum.noise=depolarizing",), "quantum.noise=depolarizing needs a device that runs noise channels"),
    (("quantum=default_qubit", "quantum.shots=0"), "quantum.shots=0 is invalid; allowed: a positive int"),
    (("quantum=default_qubit", "quantum.device=default.qutrit"), "quantum.device=default.qutrit does not run qubit"),
    # what this machine lacks (rows present only where it does lack them)
    *([] if torch.cuda.is_available() else [
        (("trainer.accelerator=gpu",), "trainer.accelerator=gpu but this machine has no such device"),
        (("trainer.strategy=fsdp",), "trainer.strategy='fsdp' is not allowed; allowed: auto, ddp"),
        (("trainer.precision=16-mixed",), "trainer.precision=16-mixed needs a CUDA GPU")]),
    *([] if torch.backends.mps.is_available() else [
        (("trainer.accelerator=mps",), "trainer.accelerator=mps but this machine has no such device")]),
    *([] if importlib.util.find_spec("deepspeed") else [
        (("trainer.strategy=deepspeed",), "trainer.strategy='deepspeed' is not allowed; allowed: auto, ddp")]),
    *([] if "lightning.gpu" in qml.plugin_devices else [
        (("quantum.backend=pennylane", "quantum.device=lightning.gpu"),
         "quantum.device='lightning.gpu' is not an installed PennyLane device")]),
]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Small JSONL files, each broken in one way (``good.jsonl``: 4 valid rows)."""
    root = tmp_path_factory.mktemp("jsonl")
    good = "".join(f'{{"prompt": "q{i}", "response": "a{i}"}}\n' for i in range(4))
    files = {
        "good.jsonl": good,
        "malformed.jsonl": good[:70] + '{"prompt": "q", "response"\n',
        "no_response.jsonl": '{"prompt": "q"}\n' * 3,
        "empty_response.jsonl": '{"prompt": "q", "response": "  "}\n' * 3,
        "user_last.jsonl": '{"messages": [{"role": "user", "content": "q"}]}\n' * 3,
        "list.jsonl": "[1, 2]\n" * 3,
        "number.jsonl": '{"prompt": 5, "response": "a"}\n' * 3,
        "role.jsonl": '{"messages": [{"role": "wizard", "content": "q"}, {"role": "assistant", "content": "a"}]}\n' * 3,
        "messages_text.jsonl": '{"messages": "hi"}\n' * 3,
        "no_fields.jsonl": '{"foo": 1}\n' * 3,
        "blank.jsonl": "\n  \n\n",
        "alpaca_bad.json": '[\n  {"instruction": "q", "output": "a"},\n  {"instruction": "q" "output": "a"}\n]\n',
        "alpaca_no_output.json": '[\n  {"instruction": "q"},\n  {"instruction": "q"},\n  {"instruction": "q"}\n]\n',
        "sharegpt_order.jsonl": '{"conversations": [{"from": "human", "value": "q"}, {"from": "human", "value": "q"}]}\n' * 3,
        "sharegpt_tool.jsonl": '{"conversations": [{"from": "human", "value": "q"}, {"from": "function_call", '
                               '"value": "{}"}]}\n' * 3,
    }
    for name, text in files.items():
        (root / name).write_text(text)
    first_row = good.splitlines(keepends=True)[0].encode()
    (root / "latin1.jsonl").write_bytes(first_row + b'{"prompt": "caf\xe9", "response": "a"}\n')
    (root / "random.jsonl").write_bytes(b"\xff\xfe" + bytes(range(256)) * 4)
    return root


def _job(overrides: tuple[str, ...], data_dir: Path) -> list[str]:
    """The tiny model unless the row picks a model; ``{data}`` filled in."""
    base = [] if any(o.startswith("model=") for o in overrides) else ["model=tiny_llama"]
    return base + [o.format(data=data_dir) for o in overrides]


# The fast tier checks every twelfth row (each section keeps some); the full suite checks them all.
@pytest.mark.parametrize(("overrides", "message"), sampled(BAD_INPUTS, 12), ids=[" ".join(o) for o, _ in BAD_INPUTS])
def test_bad_input_fails_with_one_line_naming_it(overrides, message, data_dir):
    with pytest.raises(ConfigError) as err:
        compose_checked(_job(overrides, data_dir))
    text = str(err.value)
    assert message.format(data=data_dir) in text
    assert "\n" not in text and "Traceback" not in text


def test_the_list_is_long_and_has_no_duplicates():
    keys = [o for o, _ in BAD_INPUTS]
    assert len(keys) == len(set(keys)) >= 150


CLI_CASES = [
    (("adapter=foo",), f"qtha: error: adapter='foo' is unknown; allowed: {', '.join(group_options('adapter'))}"),
    (("quantum=default_qubit", "quantum.device=default.mixed", "quantum.diff_method=adjoint"),
     "qtha: error: quantum.diff_method=adjoint is not supported by quantum.device=default.mixed"),
    ((*JSONL, "data.path={data}/malformed.jsonl"), "qtha: error: {data}/malformed.jsonl:3: invalid JSON"),
    ((*JSONL, "data.path={data}/random.jsonl"), "qtha: error: {data}/random.jsonl:1: not UTF-8 text (byte 0xff"),
    (("~adapter",), "qtha: error: adapter is unset; allowed: adapter=<dora|lora|"),
    (("data.pool_size=100000000",), "qtha: error: data.pool_size=100000000 + data.test_size=32 rows is above"),
    (("trainer.devices=abc",), "qtha: error: trainer.devices='abc' is not allowed"),
    (("name=" + "x" * 300,), "qtha: error: name='" + "x" * 300 + "' is not a safe folder name"),
]


@pytest.mark.parametrize(("overrides", "message"), CLI_CASES, ids=[" ".join(o) for o, _ in CLI_CASES])
def test_cli_exits_2_with_a_single_line(overrides, message, data_dir, tmp_path, cli):
    proc = cli(_job(overrides, data_dir), timeout=180)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(message.format(data=data_dir)), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "results").exists() and not (tmp_path / "workspace").exists()


# Files handed to ``python -m qtha.eval`` that are not run records: one line naming the file, exit 2, before any model.
RECORD_CASES = [
    ("truncated.json", b'{"status": "ok", "exper', "truncated.json: not valid JSON (Unterminated string"),
    ("binary.json", b"\xff\xfe\x00", "binary.json: not valid JSON ('utf-8' codec can't decode byte 0xff"),
    ("list.json", b"[1, 2]", "list.json: a record is a JSON object, not list"),
    ("foreign.json", b'{"hello": 1}', "foreign.json: schema_version None is unknown"),
    ("absent.json", None, "absent.json' does not exist; allowed: a <results>/runs/<experiment>/<run>.json"),
    ("absent.safetensors", None, "absent.safetensors' does not exist; allowed: a record .json or an adapter"),
]


@pytest.mark.parametrize(("name", "content", "message"), RECORD_CASES, ids=[c[0] for c in RECORD_CASES])
def test_eval_names_an_unreadable_record_in_one_line(name, content, message, tmp_path, capsys):
    from qtha import eval as qeval

    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    assert qeval.main([str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("qtha: error: ") and message in err and len(err.strip().splitlines()) == 1, err
