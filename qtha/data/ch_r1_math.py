"""CH-R1-Math: the maths rows of Chinese-DeepSeek-R1-Distill-data-110k, prompt → think + answer.

Maths rows are those whose ``repo_name`` (the prompt's origin) names a maths source: the card
lists Haijian/Advanced-Math, gavinluo/applied_math, meta-math/GSM8K_zh and EduChat-Math, all
containing "math"; none of the general, exam or STEM sources does. The response is rebuilt
as R1 emits it: ``<think>\\n{reasoning_content}\\n</think>\\n\\n{content}``; the reference answer
is the last ``\\boxed{}`` of ``content`` (maths prompts asked for one).
"""
from __future__ import annotations

from typing import Any

from qtha.data.rows import Example, Row
from qtha.data.source import FileDataset


def is_math(repo_name: Any) -> bool:
    return isinstance(repo_name, str) and "math" in repo_name.lower()


def to_example(row: Row) -> Example:
    from qtha.metrics.answers import extract_answer  # lazy: qtha.metrics pulls in the scorers

    content = row.text("content")
    response = f"<think>\n{row.text('reasoning_content').strip()}\n</think>\n\n{content.strip()}"
    return {"messages": [{"role": "user", "content": row.text("input")}, {"role": "assistant", "content": response}],
            "answer": extract_answer(content), "lang": "zh"}


DATASET = FileDataset(name="ch_r1_math", to_example=to_example,
                      fields="'input', 'reasoning_content', 'content' and 'repo_name'", keep=("repo_name", is_math))
