"""CMATH: Chinese elementary-school maths word problems with gold answers and no solutions.

An evaluation set only: the assistant turn is the bare gold answer, so its pool is empty and
training on it fails with a clear error (zero-shot evaluation and ``python -m qtha.eval`` work).
"""
from __future__ import annotations

from qtha.data.rows import Example, Row
from qtha.data.source import FileDataset


def to_example(row: Row) -> Example:
    answer = row.text("golden")
    return {"messages": [{"role": "user", "content": row.text("input")}, {"role": "assistant", "content": answer}],
            "answer": answer, "lang": "zh"}


DATASET = FileDataset(name="cmath", to_example=to_example, fields="'input' and 'golden'",
                      hub_train=None, hub_test="test", eval_only=True)
