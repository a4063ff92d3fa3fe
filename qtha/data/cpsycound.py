"""CPsyCounD: Chinese multi-turn counselling dialogues (client = user, counsellor = assistant).

Three row shapes map to the same example: the shared slice's ``{"messages": [...]}`` rows, the
GitHub ``CPsyCounD/Data/case_<n>.txt`` files, and the hub's LLaMA-Factory records
(``instruction``/``output`` + ``history`` pairs). Trailing client turns are dropped: nothing
follows them to learn (729 of 3,084 dialogues end with the client).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from qtha.errors import ConfigError
from qtha.data.rows import Example, Message, Row, utf8_lines
from qtha.data.source import FileDataset

# Speaker labels of the case files; full-width colon as in the source, ASCII accepted too.
SPEAKERS = {"来访者": "user", "心理咨询师": "assistant"}
_LABEL = re.compile(rf"^({'|'.join(SPEAKERS)})[：:]")


def parse_case(path: Path) -> Row:
    """A ``case_<n>.txt`` file as turns, the way the shared slice was derived from it.

    Every turn starts with a speaker label; any other non-blank line (a numbered list inside a
    reply, a stage direction such as ``（绘画过程中）``) continues the previous turn after a newline.
    """
    messages: list[Message] = []
    for n, line in utf8_lines(path):
        if not line.strip():
            continue
        label = _LABEL.match(line)
        if label:
            messages.append({"role": SPEAKERS[label.group(1)], "content": line[label.end():]})
        elif messages:
            messages[-1]["content"] += "\n" + line
        else:
            raise ConfigError(f"{path}:{n}: text before the first speaker label; expected each turn to start "
                              f"with {' or '.join(label + '：' for label in SPEAKERS)}")
    return Row(str(path), {"id": path.stem, "messages": messages})


def _from_history(row: Row) -> list[Any]:
    """LLaMA-Factory alpaca record → turns: each [client, counsellor] pair, then instruction → output."""
    history = row.data.get("history") or []
    if not isinstance(history, list) or any(not isinstance(p, list) or len(p) != 2 for p in history):
        raise row.error(f"field 'history' must be a list of [client, counsellor] pairs, got {history!r:.60}")
    extra = row.data.get("input")
    prompt = row.text("instruction") + (f"\n{extra}" if isinstance(extra, str) and extra.strip() else "")
    pairs = [*history, [prompt, row.text("output")]]
    return [{"role": role, "content": text} for pair in pairs for role, text in zip(("user", "assistant"), pair)]


def to_example(row: Row) -> Example:
    if "messages" in row.data:
        messages = row.data["messages"]
    elif "instruction" in row.data:
        messages = _from_history(row)
    else:
        raise row.error("expected 'messages' (a list of {role, content}) or LLaMA-Factory fields "
                        "'instruction', 'output', 'history'")
    if isinstance(messages, list):
        while messages and isinstance(messages[-1], dict) and messages[-1].get("role") == "user":
            messages = messages[:-1]
    return {"messages": row.chat(messages), "lang": "zh"}


DATASET = FileDataset(
    name="cpsycound", to_example=to_example,
    fields="'messages' (user = client, assistant = counsellor)",
    hub_files="CPsyCounD.json", text_files=("case_*.txt", parse_case),
)
