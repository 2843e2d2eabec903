"""Where a batch's requests go: the engine in this process, or a running proxy (``--via``).

:class:`EngineSender` hands each line to :meth:`Engine.handle` of the runtime
:func:`~flexroute.runtime.build_runtime` builds — the proxy's and the wrapper's engine, with
the configured ledger, billing gate and upstream pool. Credentials as the proxy takes them: in
sidecar mode the server's provider keys (``OPENAI_API_KEY``, ``GEMINI_API_KEY``…); in gateway
mode (flexroute keys in the store) the flexroute key of ``--key-file``, admitted by the same
:class:`~flexroute.proxy.gateway.Gateway`, so that key's rate limit and its organisation's
stored provider key and billing state apply.

:class:`ViaSender` posts each line to ``--via URL`` with aiohttp, carrying the key of
``--key-file`` (or the provider key from the environment) where the provider's SDKs put it.

Both answer with an :class:`Answer` carrying the engine's ``x-flexroute-*`` headers, which
the tally reads; neither retries: :mod:`flexroute.batch.runner` decides that.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Protocol

import aiohttp

from flexroute.batch.lines import Job
from flexroute.call import Call, new_request_id
from flexroute.dialects.base import MISSING
from flexroute.errors import ConfigError, RequestRejected
from flexroute.providers import api_root
from flexroute.proxy.auth import SidecarAuth
from flexroute.proxy.gateway import Gateway
from flexroute.runtime import Runtime
from flexroute.usage import Tier

__all__ = ["Answer", "EngineSender", "SendFailed", "Sender", "ViaSender", "takes_default_budget"]


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes
    request_id: str  # flexroute's

    @property
    def provider_request_id(self) -> str | None:
        return self.headers.get("x-request-id")


class SendFailed(Exception):  # noqa: N818 -- names what happened
    """No HTTP answer at all (the proxy of ``--via`` is unreachable)."""


class Sender(Protocol):
    async def send(self, job: Job, headers: list[tuple[str, str]]) -> Answer: ...

    async def aclose(self) -> None: ...


class EngineSender:
    def __init__(self, runtime: Runtime, start_within: float | None, key: str | None) -> None:
        self.runtime = runtime
        self.start_within = start_within
        self.key = key
        self.auth = SidecarAuth(runtime.settings)
        self.gateway = Gateway(runtime.settings, runtime.store, runtime.limiter)

    async def send(self, job: Job, headers: list[tuple[str, str]]) -> Answer:
        engine = self.runtime.engine
        provider = job.provider
        headers = [("content-type", "application/json"), *headers]
        call = Call("POST", job.path, "", headers, job.body, raw_path=job.path,
                    default_start_within=self.start_within)  # fmt: skip
        try:
            if await self.gateway.enabled():
                offered = provider.with_key(headers, self.key or "")
                access = await self.gateway.admit(provider, offered, "")
                call.headers, call.query = access.headers, access.query
                call.org_id, call.key_id = access.caller.org_id, access.caller.key_id
            else:
                call.headers = self.auth.upstream_headers(provider, headers)
            reply = await engine.handle(call, provider)
        except RequestRejected as error:
            reply = engine.reject(provider.error_dialect, error, call.request_id)
        await reply.delivered(True)  # a whole answer is here, bound for the output file
        body = reply.body
        if reply.stream is not None:  # a forwarded path (embeddings) relays a byte stream
            try:
                body = b"".join([chunk async for chunk in reply.stream])
            finally:
                await reply.stream.aclose()
        found = {k.lower(): v for k, v in reply.headers}
        return Answer(
            reply.status, found, body, found.get("x-flexroute-request-id", call.request_id)
        )

    async def aclose(self) -> None:
        await self.runtime.aclose()


class ViaSender:
    def __init__(
        self, url: str, start_within: float | None, key: str | None, auth: SidecarAuth, *,
        connections: int, timeout: float,
    ) -> None:  # fmt: skip
        self.root = api_root(url)
        self.auth = auth
        self.start_within = start_within
        self.key = key
        self._session: aiohttp.ClientSession | None = None
        self._connections = connections
        self._timeout = timeout

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._connections),
                timeout=aiohttp.ClientTimeout(total=self._timeout),
            )
        return self._session

    async def check(self) -> None:
        """Refuse at once, not line by line, when no flexroute proxy answers at the URL."""
        url = f"{self.root}/flexroute/v1/health"
        try:
            async with self._client().get(url, timeout=aiohttp.ClientTimeout(total=10)) as r:
                ok = r.status == 200
        except (aiohttp.ClientError, TimeoutError) as error:
            raise ConfigError(f"--via {self.root}: no answer ({type(error).__name__}); is "
                              "`flexroute serve` running there?") from None  # fmt: skip
        if not ok:
            raise ConfigError(f"--via {self.root}: GET /flexroute/v1/health answered {r.status};"
                              " is that a flexroute proxy?")  # fmt: skip

    async def send(self, job: Job, headers: list[tuple[str, str]]) -> Answer:
        headers = [("content-type", "application/json"), *headers]
        if self.key:
            headers = job.provider.with_key(headers, self.key)
        else:  # the provider key of the environment, if any (a sidecar may hold its own)
            headers = self.auth.upstream_headers(job.provider, headers)
        if self.start_within is not None and takes_default_budget(job):
            headers.append(("x-flex-start-within", f"{self.start_within:g}s"))
        try:
            async with self._client().post(
                self.root + job.path, data=job.body, headers=headers
            ) as response:
                body = await response.read()
                found = {k.lower(): v for k, v in response.headers.items()}
        except (aiohttp.ClientError, TimeoutError) as error:
            raise SendFailed(f"{self.root}: {type(error).__name__}: {error}") from None
        request_id = found.get("x-flexroute-request-id") or new_request_id()
        return Answer(response.status, found, body, request_id)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


def takes_default_budget(job: Job) -> bool:
    """Whether ``--start-within`` applies to ``job``: the engine's rule for a client's default
    budget (a line's own ``start_within`` or non-flex tier wins)."""
    dialect = job.provider.dialect_for("POST", job.path)
    if dialect is None:
        return False
    try:
        facts = dialect.read(json.loads(job.body), job.path)
    except RequestRejected:
        return False
    if facts.start_within is not MISSING:
        return False
    return facts.tier in (None, dialect.wire_tiers[Tier.FLEX])
