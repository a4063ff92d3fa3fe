"""Raw rows that remember where they came from, and the checks every loader applies to them.

A row knows its origin (``file:line``, ``case_12.txt`` or ``hub_id[split]#i``), so a missing
field or an empty response is reported as a one-line :class:`ConfigError` naming the spot
and what was expected, before any model is loaded.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from qtha.errors import ConfigError

Example = dict[str, Any]
Message = dict[str, str]
ROLES = ("system", "user", "assistant")
LANGS = ("zh", "en")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True)
class Row:
    """One source record (a JSON object or a parsed case file) and where it came from."""

    origin: str
    data: Mapping[str, Any]

    def error(self, what: str) -> ConfigError:
        return ConfigError(f"{self.origin}: {what}")

    def text(self, key: str) -> str:
        """A required field holding non-empty text."""
        value = self.data.get(key)
        if not isinstance(value, str) or not value.strip():
            raise self.error(f"field {key!r} must be non-empty text, got {_show(value)}")
        return value

    def chat(self, messages: Any) -> list[Message]:
        """Validated chat turns: known roles, non-empty text, the last one the assistant's (the target)."""
        if not isinstance(messages, list) or not messages:
            raise self.error(f"'messages' must be a non-empty list of {{role, content}}, got {_show(messages)}")
        out = []
        for k, m in enumerate(messages):
            ok = isinstance(m, Mapping) and m.get("role") in ROLES and isinstance(m.get("content"), str)
            if not ok or not m["content"].strip():
                raise self.error(f"messages[{k}] must be {{'role': system|user|assistant, 'content': non-empty "
                                 f"text}}, got {_show(m)}")
            out.append({"role": m["role"], "content": m["content"]})
        if out[-1]["role"] != "assistant":
            raise self.error("the last message must be the assistant's (the training target), "
                             f"got role {out[-1]['role']!r}")
        return out

    def lang(self, text: str) -> str:
        """The row's ``lang`` field when it has one, else Chinese when ``text`` holds CJK ideographs."""
        given = self.data.get("lang")
        if given is None:
            from qtha.metrics.lang import is_chinese  # lazy: qtha.metrics pulls in the scorers

            return "zh" if is_chinese(text) else "en"
        if given not in LANGS:
            raise self.error(f"field 'lang' must be one of {', '.join(LANGS)}, got {_show(given)}")
        return given


class Rows(Sequence[Row]):
    """Rows read into memory; ``column`` mirrors the hub's columnar access."""

    def __init__(self, rows: list[Row]) -> None:
        self._rows = rows

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, i: int) -> Row:  # type: ignore[override]
        return self._rows[i]

    def column(self, name: str) -> list[Any]:
        return [r.data.get(name) for r in self._rows]


def utf8_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of a file, read one line at a time (a 50 MB row is held once, not as the whole
    file three times over); bytes that are not UTF-8 are a one-line error naming file:line and the byte."""
    with path.open("rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                yield n, raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                raise ConfigError(f"{path}:{n}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at column "
                                  f"{exc.start + 1}); expected a UTF-8 file") from None


def _object_row(where: str, data: Any) -> Row:
    """A decoded row, which must be a JSON object."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a JSON object, got {type(data).__name__}")
    return Row(where, data)


def read_jsonl(path: Path) -> Rows:
    """One JSON object per line (blank lines skipped); a bad line is a one-line error naming it."""
    rows = []
    for n, line in utf8_lines(path):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno}); "
                              "expected one JSON object per line") from exc
        rows.append(_object_row(where, data))
    return Rows(rows)



def read_json_array(path: Path) -> Rows:
    """A JSON file holding one array of objects (LLaMA-Factory's ``.json`` datasets). Each element is decoded on its
    own, so a bad one is named by the line it starts on, as in a JSONL file."""
    text = "".join(line + "\n" for _, line in utf8_lines(path))
    decoder, rows = json.JSONDecoder(), []
    lines = _LineCounter(text)
    at = _skip(text, _skip(text, 0) + 1)  # past the "[" (read_rows checked it)
    while text[at:at + 1] != "]":
        where = f"{path}:{lines.at(at)}"
        try:
            data, at = decoder.raw_decode(text, at)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{where}: invalid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
                              "expected a JSON array of objects") from None
        rows.append(_object_row(where, data))
        at = _skip(text, at)
        if text[at:at + 1] == ",":
            at = _skip(text, at + 1)
        elif text[at:at + 1] != "]":
            raise ConfigError(f"{path}:{lines.at(at)}: expected ',' or ']' after an array element")
    return Rows(rows)


class _LineCounter:
    """The line number of a position, counted forward from the last one asked (linear over a whole file)."""

    def __init__(self, text: str) -> None:
        self.text, self.pos, self.line = text, 0, 1

    def at(self, pos: int) -> int:
        self.line += self.text.count("\n", self.pos, pos)
        self.pos = pos
        return self.line


def _skip(text: str, at: int) -> int:
    while at < len(text) and text[at] in " \t\r\n":
        at += 1
    return at


def read_rows(path: Path) -> Rows:
    """A local data file: a ``.json`` file that holds one array (LLaMA-Factory's), else JSON lines."""
    if path.suffix == ".json":
        with path.open("rb") as f:
            head = f.read(4096).lstrip()
        if head.startswith(b"["):
            return read_json_array(path)
    return read_jsonl(path)
