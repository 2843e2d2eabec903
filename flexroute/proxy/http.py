"""Reading requests from and writing replies to ASGI, with size limits."""

from __future__ import annotations

from flexroute.engine import Reply
from flexroute.errors import RequestRejected
from flexroute.proxy.types import Receive, Scope, Send

MAX_BODY_BYTES = 32 * 1024 * 1024


class ClientGone(Exception):  # noqa: N818 -- a condition, not a failure
    """The client disconnected before its request body arrived."""


async def read_body(receive: Receive, limit: int = MAX_BODY_BYTES) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise RequestRejected(
                413,
                f"The request body is larger than {limit} bytes; send a smaller request.",
                code="request_too_large",
            )
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def request_headers(scope: Scope) -> list[tuple[str, str]]:
    return [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"]]


def _encode(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]


async def send_reply(send: Send, reply: Reply) -> None:
    await send(
        {"type": "http.response.start", "status": reply.status, "headers": _encode(reply.headers)}
    )
    if reply.stream is None:
        await send({"type": "http.response.body", "body": reply.body})
        return
    stream = reply.stream
    try:
        async for chunk in stream:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    finally:
        await stream.aclose()
    await send({"type": "http.response.body", "body": b""})


async def send_json(
    send: Send, status: int, body: bytes, extra: list[tuple[str, str]] | None = None
) -> None:
    headers = [("content-type", "application/json"), *(extra or [])]
    await send_reply(send, Reply(status, headers, body))
