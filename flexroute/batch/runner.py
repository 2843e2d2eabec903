"""Run a batch file: stream its lines to a bounded pool of workers, write each answer once.

The input is read line by line (never all in memory); a bounded channel of ``concurrency``
lines sits between the reader and ``concurrency`` workers, all in one task group. Each worker
waits for a start slot (:class:`~flexroute.batch.pacing.Pacer`), sends its line
(:mod:`flexroute.batch.senders`), and on a 429 or 5xx answer — unless it says
``x-should-retry: false`` — pauses every start for the answer's ``Retry-After`` (else 1, 2,
4… s) and sends the line again, at most ``max_retries`` times; the last answer is written
whatever its status, as the Batch API writes failed requests too.

Exactly once, as far as it can be honest: a line whose output line is in the file is never
sent again, and no ``custom_id`` gets two output lines. A line that was *in flight* when the
process died has no output line, so ``--resume`` sends it again: the provider may have
answered (and billed) the first send. The ledger holds a record of that first send if its
answer came before the kill (none if the process died first): at most ``concurrency`` extra
records per kill, while the output file holds one line per ``custom_id``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import ObjectReceiveStream

from flexroute.batch.lines import BadLine, Job, error_line, parse_line, reply_line
from flexroute.batch.output import Output, open_output
from flexroute.batch.pacing import Pacer, backoff
from flexroute.batch.senders import EngineSender, Sender, SendFailed, ViaSender
from flexroute.batch.tally import Progress, Tally
from flexroute.config import Settings
from flexroute.dialects.base import retry_after_seconds
from flexroute.errors import ConfigError
from flexroute.proxy.auth import SidecarAuth
from flexroute.runtime import build_runtime

__all__ = ["RETRYABLE", "BatchOptions", "run_batch"]

RETRYABLE = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class BatchOptions:
    input: Path
    output: Path
    start_within: float | None = 60.0
    concurrency: int = 32
    rpm: float | None = None
    resume: bool = False
    via: str | None = None
    model: str | None = None  # Gemini lines without request.model
    headers: tuple[tuple[str, str], ...] = ()  # sent with every line (lower-case names)
    key: str | None = None  # a flexroute key (gateway mode) or provider key for --via
    max_retries: int = 5
    progress: bool | None = None  # None: when stderr is a terminal


def make_sender(options: BatchOptions, settings: Settings) -> Sender:
    if options.via is not None:
        return ViaSender(
            options.via, options.start_within, options.key, SidecarAuth(settings),
            connections=options.concurrency,
            timeout=settings.upstream_headers_timeout + 15 * 60,  # the whole answer, flex wait too
        )  # fmt: skip
    return EngineSender(build_runtime(settings), options.start_within, options.key)


async def run_batch(options: BatchOptions, settings: Settings) -> Tally:
    """Run ``options.input`` into ``options.output``; the tally says what happened."""
    if not options.input.is_file():
        raise ConfigError(f"batch input {options.input} is not a file")
    if options.output.exists() and options.output.resolve() == options.input.resolve():
        raise ConfigError(f"-o {options.output} is the input file: choose another output file")
    total = _count_lines(options.input)
    output = open_output(options.output, resume=options.resume)
    sender = make_sender(options, settings)
    tally = Tally(total=total)
    progress = Progress(tally, enabled=options.progress)
    try:
        if output.cut_bytes:
            progress.note(f"{options.output}: cut a torn last line ({output.cut_bytes} bytes)")
        if isinstance(sender, ViaSender):
            await sender.check()
        if isinstance(sender, EngineSender) and not options.key and await sender.gateway.enabled():
            raise ConfigError(
                "the ledger holds flexroute keys (gateway mode): give --key-file with the key "
                "`flexroute keys create` printed, so the batch runs as that key's organisation"
            )
        run = _Run(options, output, sender, tally, progress, Pacer(options.rpm))
        sharing = sender.runtime.sharing if isinstance(sender, EngineSender) else None
        if sharing is None:
            await run.all()
        else:  # the flex availability model, shared with the replicas while the run lasts
            await _beside(sharing.run, run.all)
    finally:
        tally.finish()
        progress.close()
        output.close()
        with anyio.CancelScope(shield=True):
            await sender.aclose()
    return tally


class _Run:
    def __init__(
        self, options: BatchOptions, output: Output, sender: Sender, tally: Tally,
        progress: Progress, pacer: Pacer,
    ) -> None:  # fmt: skip
        self.options, self.output, self.sender = options, output, sender
        self.tally, self.progress, self.pacer = tally, progress, pacer
        self.seen: dict[str, int] = {}

    async def all(self) -> None:
        send, receive = anyio.create_memory_object_stream[Job](self.options.concurrency)
        try:
            async with anyio.create_task_group() as group:
                for _ in range(self.options.concurrency):
                    group.start_soon(self.worker, receive.clone())
                receive.close()
                async with send:
                    with self.options.input.open("rb") as lines:
                        for number, text in enumerate(lines, start=1):
                            job = await self.admit(number, text)
                            if job is not None:
                                await send.send(job)
        except ExceptionGroup as group_error:  # one worker's error (say, a full disk), as itself
            raise _first(group_error) from None
        await self.output.drain()

    async def admit(self, number: int, text: bytes) -> Job | None:
        """The line's job, or None: blank, already written, or bad (reported here)."""
        item = parse_line(number, text, self.options.model)
        if item is None:
            return None
        if item.custom_id is not None and item.custom_id in self.output.done:
            self.tally.skipped += 1
            self.progress.update()
            return None
        first = self.seen.get(item.custom_id) if item.custom_id is not None else None
        if first is not None:  # reported, never written: that id's output is the first line's
            self.tally.bad_lines += 1
            self.progress.note(f"line {number}: custom_id {item.custom_id!r} repeats line {first}")
            return None
        if item.custom_id is not None:
            self.seen[item.custom_id] = number
        if isinstance(item, BadLine):
            self.tally.bad_lines += 1
            self.progress.note(item.report())
            if item.custom_id is not None and item.shape is not None:
                line = error_line(item.custom_id, item.shape, "invalid_request", item.report())
                await self.output.write(line, self.progress.update)
            return None
        return item

    async def worker(self, jobs: ObjectReceiveStream[Job]) -> None:
        async with jobs:
            async for job in jobs:
                line = await self.one(job)
                await self.output.write(line, self.progress.update)

    async def one(self, job: Job) -> bytes:
        headers = list(self.options.headers)
        for attempt in range(self.options.max_retries + 1):
            last = attempt == self.options.max_retries
            await self.pacer.slot()
            try:
                answer = await self.sender.send(job, headers)
            except SendFailed as error:
                if not last:
                    self._retry(backoff(attempt))
                    continue
                self.tally.unanswered()
                return error_line(job.custom_id, job.shape, "upstream_unreachable", str(error))
            retry = answer.status in RETRYABLE and answer.headers.get("x-should-retry") != "false"
            if retry and not last:
                wait = retry_after_seconds(answer.headers)
                self._retry(backoff(attempt) if wait is None else wait)
                continue
            self.tally.answered(answer.status, answer.headers)
            return reply_line(
                job, answer.status, answer.body, answer.request_id, answer.provider_request_id
            )
        raise AssertionError("unreachable: the last attempt always returns")

    def _retry(self, wait: float) -> None:
        self.tally.retries += 1
        self.pacer.pause(wait)


async def _beside(
    task: Callable[[], Coroutine[Any, Any, None]], main: Callable[[], Awaitable[None]]
) -> None:
    """Run ``main`` with ``task`` beside it, cancelled when ``main`` ends; ``main``'s error
    comes out as itself."""
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(task)
            await main()
            group.cancel_scope.cancel()
    except ExceptionGroup as group_error:
        raise _first(group_error) from None


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    found: BaseException = group
    while isinstance(found, BaseExceptionGroup):
        found = found.exceptions[0]
    return found


def _count_lines(path: Path) -> int:
    with path.open("rb") as lines:
        return sum(1 for line in lines if line.strip())
