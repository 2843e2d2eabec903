"""Gateway mode (SPEC §5): flexroute keys in, the organisation's own provider key out.

The proxy is in gateway mode when the store holds at least one flexroute key (revoked ones
count, so revoking every key never reopens the proxy); it checks once, on first use, and keeps
the answer until restart. Then every proxied request must carry a flexroute key wherever its
SDK puts the API key (``Authorization: Bearer``, ``x-api-key``, ``x-goog-api-key``, ``?key=``).
The key is stripped, counted against its rate limit and replaced with the organisation's
stored provider key; the server's own provider keys are never used in gateway mode.

Failures, in the endpoint's dialect: no, unknown or revoked key → 401 (one message for all,
so nothing tells which keys exist); over the limit → 429 with ``Retry-After``; an organisation
with no stored key for the provider → 400 ``provider_key_missing`` (the caller is known, the
request cannot be served until an operator runs ``flexroute providers set``).

Keys and decrypted provider keys are cached for ``ttl`` seconds: a revocation takes effect
within that time on every replica.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

import anyio

from flexroute.config import Settings
from flexroute.errors import ConfigError, RequestRejected
from flexroute.ledger import Store
from flexroute.ledger.keys import KEY_PREFIX, TIERS, hash_key
from flexroute.limits import Limiter, Verdict
from flexroute.providers import Provider
from flexroute.sealing import Sealer

log = logging.getLogger("flexroute.gateway")

_CREDENTIAL_HEADERS = ("authorization", "x-api-key", "x-goog-api-key")
UNAUTHORIZED = (
    "Invalid or missing flexroute API key: send the key `flexroute keys create` printed, "
    "where your SDK sends its API key."
)


@dataclass(frozen=True, slots=True)
class Caller:
    key_id: str
    org_id: str
    tier: str


@dataclass(frozen=True, slots=True)
class Access:
    """An admitted request: who sent it, what goes upstream, and its rate-limit verdict."""

    caller: Caller
    headers: list[tuple[str, str]]
    query: str
    verdict: Verdict

    def reply_headers(self, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """The provider's ``x-ratelimit-*`` renamed ``x-upstream-ratelimit-*``; ours added."""
        out = [(f"x-upstream-{k[2:]}", v) if k.startswith("x-ratelimit-") else (k, v)
               for k, v in headers]  # fmt: skip
        return out + list(self.verdict.headers().items())


class Gateway:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        limiter: Limiter,
        *,
        ttl: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.limiter = limiter
        self._ttl = ttl
        self._clock = clock
        self._wall = wall
        self._enabled: bool | None = None
        self._lock = anyio.Lock()
        self._callers: dict[str, tuple[Caller | None, float]] = {}
        self._provider_keys: dict[tuple[str, str], tuple[str, float]] = {}
        self._sealer: Sealer | None = None

    async def enabled(self) -> bool:
        if self._enabled is None:
            async with self._lock:
                if self._enabled is None:
                    self._enabled = await self.store.has_keys()
        return self._enabled

    def is_admin(self, headers: list[tuple[str, str]]) -> bool:
        admin = self.settings.admin_key
        if admin is None:
            return False
        expected = f"Bearer {admin.get_secret_value()}".encode()
        return any(k == "authorization" and hmac.compare_digest(v.encode(), expected)
                   for k, v in headers)  # fmt: skip

    async def caller(self, headers: list[tuple[str, str]], query: str) -> Caller:
        """The key's owner; RequestRejected(401) when the key is missing, unknown or revoked."""
        key = _credential(headers, query)
        found = None if key is None else await self._lookup(hash_key(key))
        if found is None:
            raise RequestRejected(
                401,
                UNAUTHORIZED,
                code="invalid_api_key",
                error_type="authentication_error",
                headers={"www-authenticate": 'Bearer realm="flexroute"'},
            )
        return found

    def forget(self, key_id: str) -> None:
        """Drop a key from this process's cache (the dashboard revoked it): refused at once."""
        for key_hash, (caller, _) in list(self._callers.items()):
            if caller is not None and caller.key_id == key_id:
                del self._callers[key_hash]

    async def admit(self, provider: Provider, headers: list[tuple[str, str]], query: str) -> Access:
        caller = await self.caller(headers, query)
        limit = self.settings.rate_limits[caller.tier]
        verdict = await self.limiter.hit(caller.key_id, limit)
        if not verdict.allowed:
            wait = max(1, verdict.reset - int(self._wall()))
            raise RequestRejected(
                429,
                f"Rate limit reached: {limit} requests per minute for this key ({caller.tier} "
                f"tier). Retry after {wait} s.",
                code="rate_limit_exceeded",
                error_type="rate_limit_error",
                headers={"retry-after": str(wait), **verdict.headers()},
            )
        secret = await self._provider_key(caller.org_id, provider.name, verdict)
        kept = [(k, v) for k, v in headers if k not in _CREDENTIAL_HEADERS]
        return Access(caller, provider.with_key(kept, secret), _strip_key(query), verdict)

    async def _lookup(self, key_hash: str) -> Caller | None:
        now = self._clock()
        cached = self._callers.get(key_hash)
        if cached is not None and cached[1] > now:
            return cached[0]
        record = await self.store.key_by_hash(key_hash)
        if record is None:
            return None  # unknown hashes are not cached: nothing for a caller to fill
        caller = None
        if not record.revoked:
            tier = _higher(record.tier, await self._earned_tier(record.org_id))
            caller = Caller(record.key_id, record.org_id, tier)
        if len(self._callers) > 10_000:
            self._callers.clear()
        self._callers[key_hash] = (caller, now + self._ttl)
        return caller

    async def _earned_tier(self, org_id: str) -> str:
        """The tier an organisation's lifetime paid invoices reach (``tier_thresholds``)."""
        paid = sum((i.amount for i in await self.store.invoices(org_id) if i.status == "paid"),
                   Decimal(0))  # fmt: skip
        return earned_tier(paid, self.settings.tier_thresholds)

    async def _provider_key(self, org_id: str, provider: str, verdict: Verdict) -> str:
        now = self._clock()
        cached = self._provider_keys.get((org_id, provider))
        if cached is not None and cached[1] > now:
            return cached[0]
        stored = await self.store.provider_key(org_id, provider)
        if stored is None:
            raise RequestRejected(
                400,
                f"Your organisation has no {provider} API key stored with flexroute; an operator "
                f"adds one with `flexroute providers set {org_id} {provider}`.",
                code="provider_key_missing",
                headers=verdict.headers(),
            )
        try:
            self._sealer = self._sealer or Sealer.from_settings(self.settings)
            secret = self._sealer.open(stored.sealed, org_id, provider)
        except ConfigError as error:
            log.error("flexroute: cannot open a stored provider key: %s", error)  # noqa: TRY400 -- no traceback needed
            raise RequestRejected(
                500,
                "flexroute cannot use the stored provider key: the server's secret is "
                "misconfigured. The operator has been told in the server log.",
                code="server_misconfigured",
                error_type="api_error",
            ) from None
        self._provider_keys[(org_id, provider)] = (secret, now + self._ttl)
        return secret


def earned_tier(paid: Decimal, thresholds: dict[str, Decimal]) -> str:
    tier = "free"
    for name in ("elevated", "paid"):
        if paid >= thresholds[name]:
            tier = _higher(tier, name)
    return tier


def _higher(a: str, b: str) -> str:
    return a if TIERS.index(a) >= TIERS.index(b) else b


def _credential(headers: list[tuple[str, str]], query: str) -> str | None:
    """The first flexroute key the request carries, from any place an SDK puts its key."""
    for name, value in headers:
        if name in _CREDENTIAL_HEADERS:
            candidate = value.removeprefix("Bearer ").strip() if name == "authorization" else value
            if candidate.startswith(KEY_PREFIX):
                return candidate
    for part in query.split("&"):
        if part.startswith(f"key={KEY_PREFIX}"):
            return part.removeprefix("key=")
    return None


def _strip_key(query: str) -> str:
    return "&".join(p for p in query.split("&") if p and not p.startswith("key="))
