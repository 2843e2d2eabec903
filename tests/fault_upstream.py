"""A fault-scripting upstream of the tests' own, on raw loopback sockets.

:mod:`tests.recording_upstream` answers through uvicorn, which only ever writes valid HTTP. This
one writes whatever a test scripts, byte for byte: a status line HTTP does not allow (``999``),
a header with a control byte, a body that is not what its content type says, a reset (RST)
before the headers or in the middle of the body, silence, a one-byte drip. Every request is
recorded (:class:`~tests.recording_upstream.Seen`) before it is answered; each connection is
answered once and closed (``Connection: close``), so no pooled connection carries a fault into
the next test.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flexroute.config import Settings
from tests.recording_upstream import Seen

__all__ = ["Fault", "FaultUpstream", "dead_url", "fault_upstream"]


@dataclass(frozen=True)
class Fault:
    """What the upstream does with one request.

    ``status_line`` and ``headers`` are written as given (no validation: that is the point);
    ``chunks`` follow, ``gap`` seconds apart; then the upstream waits ``stall`` seconds and
    ends the body by closing the connection — with a reset instead when ``reset`` is set.
    ``delay`` waits before the status line; ``reset_before_headers`` resets at once."""

    status_line: bytes = b"HTTP/1.1 200 OK"
    headers: tuple[tuple[bytes, bytes], ...] = ((b"content-type", b"application/json"),)
    chunks: tuple[bytes, ...] = (b'{"ok":true}',)
    delay: float = 0.0
    gap: float = 0.0
    stall: float = 0.0
    reset: bool = False
    reset_before_headers: bool = False
    content_length: bool = True  # declare a length (more than the chunks, if reset or stalled)


def sse(*events: bytes) -> tuple[bytes, ...]:
    """Event-stream chunks, one per event, each ``data: …`` terminated by a blank line."""
    return tuple(b"data: " + e + b"\n\n" for e in events)


@dataclass
class FaultUpstream:
    script: Callable[[Seen], Fault] = lambda seen: Fault()
    seen: list[Seen] = field(default_factory=list)
    answered: list[Seen] = field(default_factory=list)  # answers whose every chunk was sent
    url: str = ""
    _listener: socket.socket | None = None
    _closed: bool = False

    def serve(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, name="fault-upstream", daemon=True).start()

    def close(self) -> None:
        self._closed = True
        if self._listener is not None:
            self._listener.close()

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._closed:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        try:
            seen = _read_request(conn)
            if seen is None:
                return
            self.seen.append(seen)
            fault = self.script(seen)
            if fault.reset_before_headers:
                _reset(conn)
                return
            time.sleep(fault.delay)
            body = b"".join(fault.chunks)
            head = [fault.status_line, *(k + b": " + v for k, v in fault.headers)]
            if fault.content_length:  # a reset or a stall leaves it incomplete
                extra = 1000 if fault.reset or fault.stall else 0
                head.append(b"content-length: " + str(len(body) + extra).encode())
            head.append(b"connection: close")
            conn.sendall(b"\r\n".join(head) + b"\r\n\r\n")
            for i, chunk in enumerate(fault.chunks):
                if i and fault.gap:
                    time.sleep(fault.gap)
                conn.sendall(chunk)
            if not fault.stall and not fault.reset:
                self.answered.append(seen)
            time.sleep(fault.stall)
            if fault.reset:
                _reset(conn)
                return
        except OSError:
            pass  # the proxy gave up on us first: that is what many faults are for
        with suppress(OSError):
            conn.shutdown(socket.SHUT_RDWR)
        conn.close()


def _read_request(conn: socket.socket) -> Seen | None:
    conn.settimeout(10)
    data = b""
    while b"\r\n\r\n" not in data:
        piece = conn.recv(65536)
        if not piece:
            return None
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = [
        (k.strip().lower(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:])
    ]
    length = int(dict(headers).get("content-length", "0"))
    while len(body) < length:
        piece = conn.recv(65536)
        if not piece:
            break
        body += piece
    path, _, query = target.partition("?")
    return Seen(method, path, query, headers, body)


def _reset(conn: socket.socket) -> None:
    """Close with RST, not FIN, as a crashed server or a NAT timeout would."""
    with suppress(OSError):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


@contextmanager
def fault_upstream(script: Callable[[Seen], Fault] | None = None) -> Iterator[FaultUpstream]:
    upstream = FaultUpstream() if script is None else FaultUpstream(script)
    upstream.serve()
    try:
        yield upstream
    finally:
        upstream.close()


@contextmanager
def dead_url() -> Iterator[str]:
    """A loopback URL nothing listens on: connecting is refused at once. The port stays bound
    (never listening) while in use, so no other server can take it meanwhile."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def settings_for(url: str, ledger: Path, **overrides: Any) -> Settings:
    """A proxy's settings with every provider at ``url`` (server keys of its own) and its
    ledger in the SQLite file ``ledger``; short bounds so a silent fault ends a test soon."""
    values: dict[str, Any] = {
        "openai_base_url": f"{url}/v1",
        "gemini_base_url": url,
        "anthropic_base_url": url,
        "database_url": f"sqlite:///{ledger}",
        "openai_api_key": "sk-server",
        "gemini_api_key": "g-server",
        "google_api_key": None,
        "anthropic_api_key": "a-server",
        "upstream_headers_timeout": 5.0,
        "upstream_idle_timeout": 5.0,
        **overrides,
    }
    return Settings.model_validate(values)
