"""One process per run: an exclusive lock on the run's identity while it trains.

Two identical runs started together would both train in full and race on one record and one
checkpoint (the last writer wins; a concurrent ``resume=true`` could load the other's checkpoint).
The lock is a POSIX ``flock`` on ``<results>/runs/<experiment>/.locks/<config hash>.lock``, beside
the record it protects (a dot-folder: no reader takes it for records); the kernel releases it when
the process ends, however it ends, so a crash never leaves a stale lock. The file stays (deleting
a lock file races with the next taker) and holds the holder's pid, for the error message.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Iterator

from qtha.errors import ConfigError


def lock_path(results_dir: str | Path, experiment: str, digest: str) -> Path:
    return Path(results_dir) / "runs" / experiment / ".locks" / f"{digest}.lock"


@contextlib.contextmanager
def run_lock(path: Path) -> Iterator[None]:
    """Hold the lock at ``path`` for the block; a one-line :class:`ConfigError` when another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise ConfigError(f"another process (pid {holder}) is running this config now (lock {path}); allowed: "
                              "wait for it to finish and rerun (its finished record is then reused)") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
