"""The reported quantities: record key, printed label, which direction is better, precision.

One list shared by the tables, figures and REPRODUCTION.md, so a metric is named and ranked
the same way everywhere. Generation keys mirror ``qtha.metrics.scoring.METRIC_NAMES`` (a test
keeps them in step) without importing the scorers' heavy dependencies.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    higher_is_better: bool = False
    digits: int = 4
    count: bool = False  # an exact count: no ± 0 shown, and 0 (nothing trained) never ranks best


PARAMS = Column("trainable_params", "trainable params", digits=0, count=True)
RATIO = Column("ratio_to_lora", "ratio to LoRA", digits=3, count=True)
LOSSES = (
    Column("train_loss", "train loss"),
    Column("loss", "eval loss"),
    Column("ppl", "PPL (token)", digits=3),
    Column("ppl_sample", "PPL (sample)", digits=3),
)
TEXT = tuple(Column(k, label, True, 2) for k, label in
             (("bleu4", "BLEU-4"), ("rouge1", "ROUGE-1"), ("rouge2", "ROUGE-2"), ("rougeL", "ROUGE-L")))
MATH = tuple(Column(k, label, True, 2) for k, label in
             (("accuracy", "acc"), ("strict_accuracy", "strict acc"), ("ctc", "CTC"), ("ac", "AC")))
GENERATION = TEXT + MATH
STEP_TIME = Column("step_time_s", "step time (s)", digits=3)
# The eval loss before the first step (every adapter starts as the identity): what "it trained" is measured from.
INIT_LOSS = Column("init_loss", "eval loss at init")

# What a record contributes (RATIO is derived by the tables from the LoRA runs).
RECORD_COLUMNS = (PARAMS, INIT_LOSS, *LOSSES, *GENERATION, STEP_TIME)
# Adapter knobs a sweep can vary, and the override that sets each.
KNOBS = {"rank": "adapter.rank", "bond_dim": "adapter.bond_dim", "n_qubits": "adapter.n_qubits",
         "qnn_layers": "adapter.qnn_layers", "variant": "adapter.variant"}
# What each method's Pareto sweep (``pareto_*``) varies: the first knob runs along a line of the figure, the others
# (QTHA's bottleneck) tell its lines apart.
PARETO_KNOBS = {"lora": ("rank",), "qtha": ("bond_dim", "bottleneck"), "quanta": ("n_axes",)}
ADAPTER_ORDER = ("none", "lora", "dora", "quanta", "qtha")
# The setting of a row whose experiment varies nothing but adapter and seed (see report.records.settings).
ONE_SETTING = "(one setting)"

PPL_NOTE = ("PPL (token) = exp(token-mean eval cross-entropy over response tokens); PPL (sample) = mean over test "
            "samples of exp(per-sample loss), the paper's definition.")


def column(key: str) -> Column:
    """The column spec of a record key (KeyError for a key this report does not know)."""
    return {c.key: c for c in (*RECORD_COLUMNS, RATIO)}[key]
