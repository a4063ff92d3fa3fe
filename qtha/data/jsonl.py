"""Any local chat data: rows ``{"messages": [...]}`` or ``{"prompt": ..., "response": ...}``, or LLaMA-Factory's
alpaca / sharegpt rows (``data.format``, converted to ``messages`` by :mod:`qtha.data.formats` first).

Optional per row: ``answer`` (a maths reference, enables the maths metrics) and ``lang``
("zh"/"en"; guessed from CJK characters when absent).
"""
from __future__ import annotations

from qtha.data.rows import Example, Row
from qtha.data.source import FileDataset


def to_example(row: Row) -> Example:
    if "messages" in row.data:
        messages = row.chat(row.data["messages"])
    elif "prompt" in row.data or "response" in row.data:
        messages = [{"role": "user", "content": row.text("prompt")},
                    {"role": "assistant", "content": row.text("response")}]
    else:
        raise row.error("expected 'messages' (a list of {role, content}) or 'prompt' and 'response'")
    example: Example = {"messages": messages, "lang": row.lang(" ".join(m["content"] for m in messages))}
    if row.data.get("answer") is not None:
        example["answer"] = str(row.data["answer"])
    return example


DATASET = FileDataset(name="jsonl", to_example=to_example, formats=True,
                      fields="'messages' or 'prompt' and 'response' (data.format=qtha), or alpaca / sharegpt fields")
