"""GSM8K: English grade-school maths, question → worked solution (kept verbatim, ``#### N`` last).

The reference answer is what the official ``grade_school_math/dataset.py`` extracts from the
solution's final line (commas removed), so local and hub rows agree without a stored field.
"""
from __future__ import annotations

import re

from qtha.data.rows import Example, Row
from qtha.data.source import FileDataset

_FINAL = re.compile(r"#### (\-?[0-9\.\,]+)")


def to_example(row: Row) -> Example:
    question, solution = row.text("question"), row.text("answer")
    final = _FINAL.search(solution)
    if final is None:
        raise row.error("field 'answer' has no '#### <number>' line; expected a GSM8K worked solution")
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": solution}],
            "answer": final.group(1).strip().replace(",", ""), "lang": "en"}


DATASET = FileDataset(name="gsm8k", to_example=to_example, fields="'question' and 'answer'", hub_test="test")
