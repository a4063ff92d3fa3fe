"""LLaMA-Factory's dataset formats (the stack the paper's authors built on), read as qtha's chat rows.

``data.format``: ``qtha`` (rows with ``messages`` or ``prompt``/``response``, :mod:`qtha.data.jsonl`), ``alpaca`` or
``sharegpt``, with LLaMA-Factory's ``dataset_info.json`` column and tag names (``data.columns``, ``data.tags``), so
an entry of that file carries over as it is::

    data=jsonl data.path=alpaca_zh.json data.format=alpaca data.columns={prompt:instruction,query:input,response:output}

As in LLaMA-Factory, naming any column replaces the format's default column names: the columns left unnamed are
then not read (``data.columns={prompt:instruction,response:output}`` ignores an ``input`` field).

* alpaca: ``instruction`` + ``input`` (joined by a newline, as LLaMA-Factory does) is the user turn, ``output`` the
  assistant's; optional ``system`` and ``history`` ([[user, assistant], …] before the instruction);
* sharegpt: ``conversations`` of ``{from, value}`` turns tagged ``human`` / ``gpt`` / ``system``, or OpenAI-style
  ``messages`` of ``{role, content}`` (found by itself when ``data.columns.messages`` / ``data.tags`` are unset); a
  leading system turn or a ``system`` column becomes the system message. User turns must alternate with assistant
  turns (LLaMA-Factory drops a row that breaks this; qtha names it, file:line).

Fields qtha reads beside the chat (``answer``, ``lang``, ``id``) pass through. Tool turns (observation,
function_call) are refused: qtha's chat template has no tool role.
"""
from __future__ import annotations

from typing import Any, Mapping

from qtha.data.rows import Row
from qtha.errors import ConfigError, one_of

FORMATS = ("qtha", "alpaca", "sharegpt")
# LLaMA-Factory's DatasetAttr defaults, per format (None: no such column unless data.columns names one)
COLUMNS = {"alpaca": {"prompt": "instruction", "query": "input", "response": "output", "system": "system",
                      "history": "history"},
           "sharegpt": {"messages": None, "system": "system"}}
SHAREGPT_TAGS = {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
                 "system_tag": "system"}
OPENAI_TAGS = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
               "system_tag": "system"}
TOOL_TAGS = ("observation_tag", "function_tag")  # LLaMA-Factory's, accepted in data.tags but refused in rows
PASSED_THROUGH = ("answer", "lang", "id")


def given(names: Any) -> dict[str, str]:
    """The names ``data.columns`` / ``data.tags`` set (a DictConfig or its dataclass; null fields left out)."""
    items = names.items() if hasattr(names, "items") else vars(names).items()
    return {key: value for key, value in items if value is not None}


def check_format(fmt: str, columns: Mapping[str, Any], tags: Mapping[str, Any]) -> None:
    """``data.format`` and the column and tag names set for it (:func:`given`; one-line :class:`ConfigError`)."""
    one_of("data.format", fmt, FORMATS)
    _check_names("columns", "a column", columns, sorted(COLUMNS.get(fmt, {})), fmt,
                 "none (data.format=qtha reads messages or prompt/response)")
    _check_names("tags", "a tag", tags, sorted([*SHAREGPT_TAGS, *TOOL_TAGS]) if fmt == "sharegpt" else [], fmt,
                 "none (only sharegpt has tags)")


def _check_names(group: str, what: str, names: Mapping[str, Any], allowed: list[str], fmt: str, none: str) -> None:
    """Each ``data.<group>.<key>`` is one the format reads, set to a non-empty name."""
    for key, value in names.items():
        if key not in allowed:
            raise ConfigError(f"data.{group}.{key} is not {what} of data.format={fmt}; allowed: "
                              f"{', '.join(allowed) or none}")
        if not isinstance(value, str) or not value:
            raise ConfigError(f"data.{group}.{key}={value!r} must be a non-empty name")


def convert(row: Row, fmt: str, columns: Mapping[str, str], tags: Mapping[str, str]) -> Row:
    """``row`` as a qtha row (``messages`` plus the passed-through fields); ``qtha`` rows are returned as they are."""
    if fmt == "qtha":
        return row
    names = {key: columns.get(key) for key in COLUMNS[fmt]} if columns else COLUMNS[fmt]
    messages = _alpaca(row, names) if fmt == "alpaca" else _sharegpt(row, names, tags)
    kept = {k: row.data[k] for k in PASSED_THROUGH if k in row.data}
    return Row(row.origin, {**kept, "messages": messages})


def _field(row: Row, name: str | None) -> Any:
    return row.data.get(name) if name else None


def _alpaca(row: Row, names: Mapping[str, str]) -> list[dict[str, str]]:
    messages = []
    system = _field(row, names["system"])
    if system:
        messages.append({"role": "system", "content": system})
    history = _field(row, names["history"])
    if history:
        if not isinstance(history, list) or not all(isinstance(t, list) and len(t) == 2 for t in history):
            raise row.error(f"field {names['history']!r} must be a list of [user, assistant] pairs")
        for user, assistant in history:
            messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    query = [q for q in (_field(row, names["prompt"]), _field(row, names["query"])) if q]
    if not query:
        raise row.error(f"fields {names['prompt']!r} / {names['query']!r} are both empty; expected the instruction")
    response = _field(row, names["response"])
    if not isinstance(response, str):
        raise row.error(f"field {names['response']!r} must be the response text, got {type(response).__name__}")
    return [*messages, {"role": "user", "content": "\n".join(map(str, query))},
            {"role": "assistant", "content": response}]


def _sharegpt(row: Row, names: Mapping[str, str | None], given: Mapping[str, str]) -> list[dict[str, str]]:
    column = names["messages"] or next((c for c in ("conversations", "messages") if c in row.data), "conversations")
    turns = row.data.get(column)
    if not isinstance(turns, list) or not turns or not all(isinstance(t, Mapping) for t in turns):
        raise row.error(f"field {column!r} must be a non-empty list of turns")
    tags = {**(OPENAI_TAGS if "role" in turns[0] and "from" not in turns[0] else SHAREGPT_TAGS), **given}
    roles = {tags["user_tag"]: "user", tags["assistant_tag"]: "assistant", tags["system_tag"]: "system"}
    messages = []
    system = _field(row, names["system"])
    if turns[0].get(tags["role_tag"]) == tags["system_tag"]:
        system, turns = turns[0].get(tags["content_tag"]), turns[1:]
    if system:
        messages.append({"role": "system", "content": system})
    for k, turn in enumerate(turns):
        role = roles.get(turn.get(tags["role_tag"]))
        expected = "user" if k % 2 == 0 else "assistant"
        if role != expected:
            raise row.error(f"{column}[{k}] has {tags['role_tag']}={turn.get(tags['role_tag'])!r}; expected "
                            f"{tags[expected + '_tag']!r} (turns alternate {tags['user_tag']} / {tags['assistant_tag']}"
                            f"; tool turns are not supported)")
        messages.append({"role": role, "content": turn.get(tags["content_tag"])})
    return messages
