"""R1-Distill-SFT (config v0): English maths problem → R1 distillation (``<think>…</think>`` + solution).

The reference answer is the last ``\\boxed{}`` of the original NuminaMath ``solution``, read
with the same extractor the maths metrics use; a row without one keeps ``answer=None``.
"""
from __future__ import annotations

from qtha.data.rows import Example, Row
from qtha.data.source import FileDataset


def to_example(row: Row) -> Example:
    from qtha.metrics.answers import extract_answer  # lazy: qtha.metrics pulls in the scorers

    solution = row.data.get("solution")
    return {"messages": [{"role": "user", "content": row.text("problem")},
                         {"role": "assistant", "content": row.text("reannotated_assistant_content")}],
            "answer": extract_answer(solution) if isinstance(solution, str) else None, "lang": "en"}


DATASET = FileDataset(name="r1_distill_sft", to_example=to_example,
                      fields="'problem', 'reannotated_assistant_content' and 'solution'")
