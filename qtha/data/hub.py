"""Hugging Face hub splits, read row by row on demand.

A hub set can be large (R1-Distill-SFT v0: 171,647 rows of long reasoning traces), so its
split stays an Arrow table: filters read one column, and only the rows a run draws are ever
turned into Python dicts. Loading needs ``allow_hub=true`` (or the set in the local cache);
any failure becomes :class:`HubUnavailable` for the caller to turn into a one-line error.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

from qtha.data.rows import Row


class HubUnavailable(Exception):
    """The split could not be loaded (offline, gated, unknown config, ...)."""


class HubRows(Sequence[Row]):
    """A loaded ``datasets.Dataset`` split seen as rows."""

    def __init__(self, dataset: Any, origin: str) -> None:
        self._ds, self._origin = dataset, origin

    def __len__(self) -> int:
        return len(self._ds)

    def __getitem__(self, i: int) -> Row:  # type: ignore[override]
        return Row(f"{self._origin}#{i}", self._ds[i])

    def column(self, name: str) -> list[Any]:
        return list(self._ds[name]) if name in self._ds.column_names else [None] * len(self._ds)


def describe(hub_id: str, config: Optional[str], split: Optional[str] = None) -> str:
    """``ServiceNow-AI/R1-Distill-SFT (config v0, split train)`` for messages."""
    parts = [f"config {config}"] if config else []
    parts += [f"split {split}"] if split else []
    return f"{hub_id} ({', '.join(parts)})" if parts else hub_id


def load_split(hub_id: str, config: Optional[str], split: str, data_files: Optional[str] = None) -> HubRows:
    """One split via ``datasets.load_dataset``."""
    import datasets

    try:
        ds = datasets.load_dataset(hub_id, config, split=split, data_files=data_files)
    except Exception as exc:  # noqa: BLE001 - any loader failure means "not reachable from here"
        reason = (str(exc).strip().splitlines() or [""])[0][:200]
        raise HubUnavailable(f"{describe(hub_id, config, split)} could not be loaded from the Hugging Face hub "
                             f"({type(exc).__name__}: {reason})") from exc
    return HubRows(ds, f"{hub_id}[{split}]")
