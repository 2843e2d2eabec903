"""A scriptable upstream of the tests' own: it records every request exactly as it arrived
(raw path, query, headers, body) and answers as each test scripts it, faults included."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio

from flexroute.testing import serve_in_thread

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Seen:
    method: str
    raw_path: str
    query: str
    headers: list[tuple[str, str]]
    body: bytes

    def header_values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name]

    def json(self) -> Any:
        return json.loads(self.body)


class Answer:
    """How the upstream answers: a status, ``headers`` and body chunks; ``cut`` drops the
    connection after the chunks, before the declared body is complete; ``delay`` waits before
    the headers, ``stall`` after the chunks (before the body ends)."""

    def __init__(
        self,
        status: int = 200,
        body: bytes = b'{"ok":true}',
        content_type: str = "application/json",
        *,
        chunks: list[bytes] | None = None,
        cut: bool = False,
        delay: float = 0.0,
        stall: float = 0.0,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        self.status, self.content_type, self.cut = status, content_type, cut
        self.headers = headers or []
        self.delay, self.stall = delay, stall
        self.chunks = chunks if chunks is not None else [body]


class CutConnection(Exception):  # noqa: N818 -- what the server does, on purpose
    """Raised inside the app after a partial body: uvicorn then drops the connection."""


@dataclass
class RecordingUpstream:
    answer: Callable[[Seen], Answer] = lambda seen: Answer()
    seen: list[Seen] = field(default_factory=list)
    url: str = ""

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        seen = Seen(
            scope["method"],
            scope["raw_path"].decode("latin-1"),
            scope["query_string"].decode("latin-1"),
            [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]],
            body,
        )
        self.seen.append(seen)
        answer = self.answer(seen)
        await anyio.sleep(answer.delay)
        headers = [(b"content-type", answer.content_type.encode())]
        headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers]
        if answer.cut:
            declared = sum(len(c) for c in answer.chunks) + 1000
            headers.append((b"content-length", str(declared).encode()))
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        for chunk in answer.chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await anyio.sleep(answer.stall)
        if answer.cut:
            raise CutConnection
        await send({"type": "http.response.body", "body": b""})


@contextmanager
def recording_upstream(
    answer: Callable[[Seen], Answer] | None = None,
) -> Iterator[RecordingUpstream]:
    app = RecordingUpstream() if answer is None else RecordingUpstream(answer)
    with serve_in_thread(app) as url:
        app.url = url
        yield app
