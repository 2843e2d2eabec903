"""The output file: appended and fsynced in order of completion, read back on ``--resume``.

A line counts as written once its bytes and the ``\\n`` that ends it are in the file. On
resume :func:`open_output` reads every complete line's ``custom_id`` (or ``key``) and cuts off
a torn last line (no ``\\n``: the process died inside a write), so that line is sent again
rather than kept half-written. Without ``--resume`` a non-empty output file is refused: one
file, one run, no line written twice.

Writes are group-committed: lines finished while an ``fsync`` runs are written together and
covered by the next one, so a slow disk slows the file, not the requests.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.to_thread

from flexroute.batch.lines import written_id
from flexroute.errors import ConfigError

__all__ = ["Output", "open_output"]


@dataclass(slots=True)
class Output:
    """An output file open for appending; ``done`` holds the ids already in it."""

    path: Path
    fd: int
    done: set[str]
    cut_bytes: int = 0  # a torn last line removed on resume
    pending: list[tuple[bytes, Callable[[], None]]] = field(default_factory=list)
    _flushing: bool = False
    _idle: anyio.Event | None = None

    async def write(self, line: bytes, on_written: Callable[[], None]) -> None:
        """Append ``line``; ``on_written`` runs once it is fsynced. Returns at once unless this
        call becomes the one that flushes (then it returns when the file is synced)."""
        self.pending.append((line, on_written))
        if self._flushing:
            return
        self._flushing = True
        self._idle = anyio.Event()
        try:
            while self.pending:
                batch, self.pending = self.pending, []
                data = b"".join(line for line, _ in batch)
                try:
                    _write_all(self.fd, data)
                    await anyio.to_thread.run_sync(os.fsync, self.fd)
                except OSError as error:
                    raise ConfigError(
                        f"cannot write {self.path}: {error.strerror}; the lines before are kept: "
                        "fix it and run again with --resume"
                    ) from None
                for _, callback in batch:
                    callback()
        finally:
            self._flushing = False
            self._idle.set()

    async def drain(self) -> None:
        """Wait until every line handed to :meth:`write` is synced."""
        while self._flushing and self._idle is not None:
            await self._idle.wait()

    def close(self) -> None:
        os.close(self.fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def open_output(path: Path, *, resume: bool) -> Output:
    """Open ``path`` to append; with ``resume``, learn what it holds and cut a torn line."""
    exists = path.exists() and path.stat().st_size > 0
    if exists and not resume:
        raise ConfigError(
            f"{path} already has output lines: pass --resume to continue that run (lines "
            "already written are skipped), or choose another -o file"
        )
    done: set[str] = set()
    cut = 0
    if exists:
        done, keep = _scan(path)
        size = path.stat().st_size
        if keep < size:
            cut = size - keep
            os.truncate(path, keep)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    return Output(path, fd, done, cut)


def _scan(path: Path) -> tuple[set[str], int]:
    """Ids of the complete lines and the length of the file up to the last ``\\n``."""
    done: set[str] = set()
    keep = 0
    with path.open("rb") as file:
        for number, line in enumerate(file, start=1):
            if not line.endswith(b"\n"):
                break  # torn: the process stopped inside this write
            keep += len(line)
            if not line.strip():
                continue
            try:
                found = written_id(line)
            except (ValueError, UnicodeDecodeError):
                raise ConfigError(
                    f"{path} line {number} is not JSON, so it is not a flexroute batch output "
                    "file: --resume needs the file an earlier run wrote"
                ) from None
            if found is not None:
                done.add(found)
    return done, keep
