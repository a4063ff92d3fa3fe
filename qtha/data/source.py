"""Datasets read from local files or the hub: where the rows are, and how they split.

Every file-backed dataset follows one recipe, so the guarantees hold for all of them:

* ``data.path`` wins when it holds data: a folder with ``train.jsonl`` and/or ``test.jsonl`` (or ``.json``),
  one such file (a ``.json`` file may hold one array), or (CPsyCounD) a folder of ``case_*.txt`` dialogues; otherwise the
  dataset's ``hub_id`` is loaded with ``datasets.load_dataset``;
* the test split is the source's own when it has one, else a fixed hold-out of
  ``data.holdout_size`` rows drawn with ``data.data_seed`` (disjoint from the pool);
* the training pool is the rest, capped at ``data.pool_size`` rows drawn with the same
  permutation, in source order, less any row whose conversation repeats a test row verbatim
  (the CPsyCounD sources hold two copies of a test dialogue); ``data.size`` later takes a
  seeded prefix of it (nested);
* an evaluation-only set (no solutions to train on) has an empty pool.

The hold-out recipe is the one the shared CPsyCounD slice was cut with (``random.Random(seed)
.shuffle`` of the row indices, the first ``holdout`` rows are the test split), so the GitHub
case files with ``data_seed=42, holdout_size=300`` give back exactly its 2,784 / 300 split.
"""
from __future__ import annotations

import logging
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Protocol

from qtha.config import DataConfig
from qtha.errors import ConfigError
from qtha.data import formats, hub
from qtha.data.rows import Example, Row, Rows, read_rows

log = logging.getLogger("qtha")
REPO_ROOT = Path(__file__).resolve().parents[2]


class Table(Protocol):
    """Rows with columnar access: :class:`~qtha.data.rows.Rows` or :class:`~qtha.data.hub.HubRows`."""

    def __len__(self) -> int: ...
    def __getitem__(self, i: int) -> Row: ...
    def column(self, name: str) -> list[Any]: ...


Splits = tuple[Optional[Table], Optional[Table]]


def resolve(path: Optional[str]) -> Optional[Path]:
    """``data.path`` made absolute: as given when it exists, else relative to the repository root.

    So the default ``../shared/data/<set>`` works from the repository root and from anywhere else.
    """
    if not path:
        return None
    given = Path(path).expanduser()
    return (given if given.is_absolute() or given.exists() else REPO_ROOT / given).resolve()


def _conversation(example: Example) -> tuple[tuple[str, str], ...]:
    return tuple((m["role"], m["content"]) for m in example["messages"])


def _split_file(folder: Path, split: str) -> Optional[Path]:
    """``<split>.jsonl``, else ``<split>.json``, in ``folder`` (None when neither is there)."""
    return next((p for p in (folder / f"{split}.jsonl", folder / f"{split}.json") if p.is_file()), None)


def _case_number(path: Path) -> tuple[int, str]:
    digits = re.findall(r"\d+", path.stem)
    return (int(digits[-1]) if digits else -1, path.name)


@dataclass(frozen=True)
class FileDataset:
    """One dataset: how a row becomes a chat example, and where its splits live on the hub.

    ``fields`` says what a row must hold (for error messages); ``keep`` = (column, predicate)
    selects rows before splitting (CH-R1-Math: maths prompts only); ``text_files`` = (glob,
    parser) reads a folder of one-dialogue text files; ``hub_test=None`` means "no test split:
    hold one out"; ``formats``: rows may come in LLaMA-Factory's formats (``data.format``, :mod:`qtha.data.formats`).
    """

    name: str
    to_example: Callable[[Row], Example]
    fields: str
    hub_train: Optional[str] = "train"
    hub_test: Optional[str] = None
    hub_files: Optional[str] = None
    keep: Optional[tuple[str, Callable[[Any], bool]]] = None
    text_files: Optional[tuple[str, Callable[[Path], Row]]] = None
    eval_only: bool = False
    formats: bool = False

    # ------------------------------------------------------------------ reading
    def _local_files(self, path: Optional[Path]) -> tuple[str, list[Path]]:
        """What a local read of ``path`` opens: (``"file"`` | ``"splits"`` | ``"cases"`` | ``""``, files)."""
        if path is None or not path.exists():
            return "", []
        if path.is_file():
            return "file", [path]
        splits = [p for p in (_split_file(path, "train"), _split_file(path, "test")) if p is not None]
        if splits:
            return "splits", splits
        if self.text_files:
            cases = sorted(path.glob(self.text_files[0]), key=_case_number)
            if cases:
                return "cases", cases
        return "", []

    def _local_reader(self, path: Optional[Path]) -> Optional[Callable[[], Splits]]:
        """How to read the local data at ``path``, or None when there is none (nothing is read yet)."""
        layout, files = self._local_files(path)
        if layout == "file":
            return lambda: (read_rows(files[0]), None)
        if layout == "splits":
            train, test = _split_file(path, "train"), _split_file(path, "test")
            return lambda: (read_rows(train) if train else None, read_rows(test) if test else None)
        if layout == "cases":
            return lambda: (Rows([self.text_files[1](p) for p in files]), None)
        return None

    def stamp(self, cfg: DataConfig) -> list[tuple[str, int, int]]:
        """(path, size, mtime) of every local file a load would read: changes whenever the data does."""
        stamps = []
        for p in self._local_files(resolve(cfg.path))[1]:
            st = p.stat()
            stamps.append((str(p), st.st_size, st.st_mtime_ns))
        return stamps

    def has_local(self, cfg: DataConfig) -> bool:
        return self._local_reader(resolve(cfg.path)) is not None

    def _layout(self) -> str:
        files = "train/test .jsonl or .json files or one such file"
        if self.text_files:
            files += f" or {self.text_files[0]} files"
        return f"{files}; rows with {self.fields}"

    def missing(self, cfg: DataConfig, why: str) -> ConfigError:
        """No usable data: name the path, the expected layout and both ways to get the data."""
        path = resolve(cfg.path)
        where = f"at {str(path)!r}" if path else "because data.path is unset"
        fix = "data.path=<folder or .jsonl file>"
        if cfg.hub_id:
            fix = f"allow_hub=true (with internet) to download {hub.describe(cfg.hub_id, cfg.hub_config)}, or {fix}"
        return ConfigError(f"data={self.name} has no local data {where} (expected {self._layout()}) and {why}; "
                           f"allowed: {fix}")

    def read(self, cfg: DataConfig) -> Splits:
        """The (train, test) tables: local files when present, else the hub."""
        path = resolve(cfg.path)
        reader = self._local_reader(path)
        if reader is not None:
            return reader()
        if not cfg.hub_id:
            raise self.missing(cfg, "the dataset has no hub_id")
        if cfg.path:
            log.warning("qtha: data.path %s holds no data; loading %s from the hub", path, cfg.hub_id)
        hub_id, config, files = cfg.hub_id, cfg.hub_config, self.hub_files

        def split(name: Optional[str]) -> Optional[Table]:
            return hub.load_split(hub_id, config, name, files) if name else None

        try:
            return split(self.hub_train), split(self.hub_test)
        except hub.HubUnavailable as exc:
            raise self.missing(cfg, f"{exc}; a gated set also needs `huggingface-cli login`") from exc

    # ------------------------------------------------------------------ splitting
    def _kept(self, table: Optional[Table]) -> list[int]:
        if table is None:
            return []
        if self.keep is None:
            return list(range(len(table)))
        column, wanted = self.keep
        return [i for i, value in enumerate(table.column(column)) if wanted(value)]

    def load(self, cfg: DataConfig) -> tuple[list[Example], list[Example]]:
        """The training pool and the fixed test split (see the module docstring for the recipe)."""
        train, test = self.read(cfg)
        if self.eval_only:
            train, test = None, test if test is not None else train
        order = self._kept(train)
        random.Random(cfg.data_seed).shuffle(order)
        test_idx = self._kept(test)
        if test is None:
            if len(order) <= cfg.holdout_size:
                raise ConfigError(f"data={self.name} has {len(order)} rows, too few to hold out "
                                  f"data.holdout_size={cfg.holdout_size} for testing; allowed: a smaller "
                                  "data.holdout_size, or a folder with its own test.jsonl")
            test, test_idx, order = train, sorted(order[:cfg.holdout_size]), order[cfg.holdout_size:]
        if not test_idx:
            raise ConfigError(f"data={self.name} has an empty test split (data.path={cfg.path!r}); "
                              "allowed: a test.jsonl with at least one row")
        tests = [self._example(test[i], cfg) for i in test_idx]
        seen = {_conversation(e) for e in tests}
        pool = [self._example(train[i], cfg) for i in sorted(order[:cfg.pool_size])]
        fresh = [e for e in pool if _conversation(e) not in seen]
        if len(fresh) < len(pool):
            log.info("qtha: data=%s: %d training rows repeat a test conversation verbatim and are left out",
                     self.name, len(pool) - len(fresh))
        return fresh, tests

    def _example(self, row: Row, cfg: DataConfig) -> Example:
        if self.formats:
            row = formats.convert(row, cfg.format, formats.given(cfg.columns), formats.given(cfg.tags))
        example = self.to_example(row)
        example.setdefault("id", str(row.data.get("id") or row.origin))
        return example

