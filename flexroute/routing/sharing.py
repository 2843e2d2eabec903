"""Sharing the flex availability model between processes: workers, and replicas via Redis.

Each process learns only from its own flex attempts (:mod:`flexroute.routing.availability`).
About once a second (``interval``) a background task publishes this process's summaries — a
few dozen decayed weights per model, at most ``MAX_SHARED`` models, the most recently seen —
and reads every other process's, which the model merges on read. Nothing is written per
request; a request never waits on this.

- **Redis** (``FLEXROUTE_REDIS_URL``): one key per process, ``{prefix}flex:{process}``, a JSON
  document that expires after ``ttl`` seconds (a dead replica's summary goes away), found with
  ``SCAN``. Every call is bounded (socket timeouts and an overall ``timeout``); Redis down or
  slow means no peers until it answers again: each process keeps its own model, no error
  reaches a request, one warning is logged per outage.
- **Workers without Redis** (``flexroute serve --workers N``): one file per worker in a
  ``flex-availability`` directory inside the workers' shared metrics directory
  (``PROMETHEUS_MULTIPROC_DIR``, emptied by the supervisor at start), written to a temporary
  name and atomically renamed; a file not rewritten within ``ttl`` seconds is a dead worker's.

With Redis the files are not used (every worker publishes to Redis itself), so no summary is
counted twice.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from flexroute.routing.availability import Availability, Key, Summary, combined

__all__ = ["MAX_SHARED", "Sharing", "files_directory"]

log = logging.getLogger("flexroute")
MAX_SHARED = 200  # models per process summary: the document stays small
FILES_DIR = "flex-availability"
Peers = dict[Key, list[Summary]]


def files_directory() -> Path | None:
    """The workers' shared directory for summary files, or None outside ``--workers``."""
    base = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return None if not base else Path(base) / FILES_DIR


def _document(process: str, own: dict[Key, Summary]) -> bytes:
    recent = sorted(own.items(), key=lambda item: item[1].at, reverse=True)[:MAX_SHARED]
    models = [
        {"provider": k[0], "model": k[1], "org": k[2], "summary": s.to_json()} for k, s in recent
    ]
    return json.dumps({"process": process, "models": models}).encode()


def _parse(data: bytes | str, into: Peers) -> None:
    """Add one process's document to ``into``; a malformed one is skipped whole."""
    found: list[tuple[Key, Summary]] = []
    try:
        for entry in json.loads(data)["models"]:
            key = (str(entry["provider"]), str(entry["model"]), str(entry["org"]))
            found.append((key, Summary.from_json(entry["summary"])))
    except (ValueError, TypeError, KeyError, AttributeError):
        return
    for key, summary in found:
        into.setdefault(key, []).append(summary)


class Sharing:
    """Publishes this process's summaries and keeps its peers' for the model to merge."""

    def __init__(
        self,
        availability: Availability,
        *,
        redis_url: str | None = None,
        prefix: str = "flexroute:",
        directory: Path | None = None,
        process: str | None = None,
        interval: float = 1.0,
        ttl: float = 10.0,
        timeout: float = 0.5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.availability = availability
        self.process = process or f"{os.uname().nodename}-{os.getpid()}"
        self.interval, self.ttl, self.timeout, self.clock = interval, ttl, timeout, clock
        self.directory = None if redis_url else directory
        self.peers: Peers = {}
        self.failures = 0  # exchanges with Redis that failed or timed out
        self._redis: Any = None
        self._key = f"{prefix}flex:{self.process}"
        self._pattern = f"{prefix}flex:*"
        self._down = False
        if redis_url:
            import redis.asyncio as aioredis

            self._redis = aioredis.Redis.from_url(
                redis_url, socket_timeout=timeout, socket_connect_timeout=timeout
            )
        availability.peers = lambda: self.peers

    async def run(self) -> None:
        """Exchange summaries every ``interval`` seconds, for as long as the task lives."""
        while True:
            try:
                await self.exchange()
            except Exception:  # a bug here must not end the app's other background tasks
                log.exception("flexroute: flex availability exchange failed")
            await anyio.sleep(self.interval)

    async def exchange(self) -> None:
        """Publish this process's summaries once and read the peers' (never raises)."""
        document = _document(self.process, self.availability.own())
        if self._redis is not None:
            peers = await self._with_redis(document)
        elif self.directory is not None:
            try:
                peers = await anyio.to_thread.run_sync(self._with_files, document)
            except OSError as error:
                log.warning("flexroute: flex availability files in %s: %s", self.directory, error)
                return
        else:
            return
        # Added up once here, not on every request's estimate: one summary per model.
        now, half_life = self.availability.clock(), self.availability.half_life
        self.peers = {key: [combined(found, now, half_life)] for key, found in peers.items()}
        self.availability.adopt_recoveries()

    async def _with_redis(self, document: bytes) -> Peers:
        from redis.exceptions import RedisError

        peers: Peers = {}
        try:
            with anyio.fail_after(2 * self.timeout):
                await self._redis.set(self._key, document, px=round(self.ttl * 1000))
                keys = [k async for k in self._redis.scan_iter(match=self._pattern, count=100)]
                # bytes: a stray key under the prefix need not be UTF-8
                others = [k for k in keys if k != self._key.encode()]
                for data in await self._redis.mget(others) if others else []:
                    if data is not None:
                        _parse(data, peers)
        except (RedisError, OSError, TimeoutError) as error:
            self.failures += 1
            if not self._down:
                log.warning(
                    "flexroute: Redis unreachable for flex availability (%s): each process "
                    "uses its own observations until it answers",
                    error,
                )
            self._down = True
            return {}
        self._down = False
        return peers

    def _with_files(self, document: bytes) -> Peers:
        assert self.directory is not None
        self.directory.mkdir(parents=True, exist_ok=True)
        mine = self.directory / f"{self.process}.json"
        temporary = mine.with_suffix(".tmp")
        temporary.write_bytes(document)
        os.replace(temporary, mine)
        peers: Peers = {}
        now = self.clock()
        for path in self.directory.glob("*.json"):
            if path == mine:
                continue
            with contextlib.suppress(OSError):  # a worker may replace or remove it meanwhile
                if now - path.stat().st_mtime <= self.ttl:
                    _parse(path.read_bytes(), peers)
        return peers

    async def aclose(self) -> None:
        """Remove this process's summary (best effort) and close the Redis connection."""
        if self.directory is not None:
            with contextlib.suppress(OSError):
                (self.directory / f"{self.process}.json").unlink()
        if self._redis is not None:
            with anyio.move_on_after(self.timeout), contextlib.suppress(Exception):
                await self._redis.delete(self._key)
            with contextlib.suppress(Exception):
                await self._redis.aclose()
