"""Settings, read from ``FLEXROUTE_*`` environment variables (SPEC §6)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from flexroute.duration import parse_start_within

DEFAULT_RATE_LIMITS = {"free": 10, "elevated": 60, "paid": 300}
DEFAULT_TIER_THRESHOLDS = {"elevated": Decimal(20), "paid": Decimal(500)}


def default_database_url() -> str:
    """The embedded SQLite ledger: ``$XDG_DATA_HOME/flexroute/ledger.sqlite3``."""
    base = Path.home() / ".local" / "share"
    import os

    xdg = os.environ.get("XDG_DATA_HOME")
    if xdg:
        base = Path(xdg)
    return f"sqlite:///{base / 'flexroute' / 'ledger.sqlite3'}"


class Settings(BaseSettings):
    """Operator settings. Upstream base URLs come only from here, never from a request."""

    model_config = SettingsConfigDict(
        env_prefix="FLEXROUTE_", extra="ignore", frozen=True, populate_by_name=True
    )

    # With or without the API version (``…/v1``, ``…/v1beta``, Azure's ``…/openai/v1``): the
    # request's own path supplies it (flexroute.providers.api_root). Defaults: the forms the
    # providers' SDKs use.
    openai_base_url: str = "https://api.openai.com/v1"
    gemini_base_url: str = "https://generativelanguage.googleapis.com"
    anthropic_base_url: str = "https://api.anthropic.com"
    database_url: str = Field(default_factory=default_database_url)
    redis_url: str | None = None
    # Where records wait when the store cannot take them (flexroute.ledger.spool); default:
    # next to the SQLite file, or in the data directory for PostgreSQL.
    spool_path: str | None = None
    # Bounds on a silent or stalled provider (seconds). The flex budget stays start_within.
    upstream_connect_timeout: float = Field(default=10.0, gt=0)
    upstream_headers_timeout: float = Field(default=600.0, gt=0)  # a whole non-stream answer
    upstream_idle_timeout: float = Field(default=300.0, gt=0)  # between two bytes of a body
    # request sent → the answer's last byte; a flex attempt gets its budget on top
    upstream_total_timeout: float = Field(default=1800.0, gt=0)
    # Hostile load (issue 11 item 7): at most this many open connections to one provider host;
    # a burst beyond it waits for a pooled connection (within the connect timeout).
    upstream_connections_per_host: int = Field(default=100, gt=0)
    # A pooled provider connection unused this long is closed (providers close theirs at 60-90 s).
    upstream_pool_idle_timeout: float = Field(default=30.0, gt=0)
    # Slow clients (gateway mode listens publicly): a request's headers must arrive within
    # this many seconds of its first byte (or of the connection's opening), its body within
    # the body timeout of its headers; else 408 and the connection is closed.
    client_header_timeout: float = Field(default=20.0, gt=0)
    client_body_timeout: float = Field(default=60.0, gt=0)
    # SIGTERM: stop accepting, let in-flight requests finish for at most this long, then exit.
    drain_timeout: float = Field(default=30.0, gt=0)
    ledger_write_timeout: float = Field(default=2.0, gt=0)
    secret_key: SecretStr | None = None
    secret_key_previous: SecretStr | None = None  # comma-separated old secrets, for rotation
    admin_key: SecretStr | None = None  # gateway mode: Bearer credential for GET /metrics
    # Gateway rate limits: requests per minute per flexroute key, by tier.
    rate_limits: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_RATE_LIMITS))
    # Lifetime paid spend (USD, invoices paid) that raises an organisation's keys to a tier.
    tier_thresholds: dict[str, Decimal] = Field(
        default_factory=lambda: dict(DEFAULT_TIER_THRESHOLDS)
    )
    redis_prefix: str = "flexroute:"
    fee_rate: Decimal = Decimal("0.20")
    default_start_within: float | None = None
    payment_processor: str = "manual"
    stripe_api_key: SecretStr | None = None
    stripe_api_base: str | None = None  # Stripe's own API unless set (a local fake in tests)
    stripe_webhook_secret: SecretStr | None = None
    # The dashboard's card form (issue 15): Stripe.js from this URL (localstripe's fake
    # ``…/js.stripe.com/v3/`` in tests) with this publishable key; the card number goes from
    # the browser to Stripe, never through flexroute.
    stripe_publishable_key: str | None = None
    stripe_js_url: str = "https://js.stripe.com/v3/"
    # A dashboard session (signed in with a flexroute key) lasts this long (seconds).
    dashboard_session_ttl: float = Field(default=8 * 3600.0, gt=0)
    billing_threshold_usd: Decimal = Decimal(20)
    # Issue 15: free fee credit for each new organisation (0: off), and the unpaid balance
    # above which a postpaid organisation is charged at once rather than at month end.
    free_credit_usd: Decimal = Field(default=Decimal(0), ge=0)
    balance_limit_usd: Decimal | None = Field(default=None, gt=0)
    # Workers (flexroute.proxy.workers): processes for `serve` (None: one), and how long
    # the billing gate trusts a cached organisation state, so another process's mark-paid or
    # Stripe webhook is seen within it.
    workers: int | None = Field(default=None, ge=1)
    billing_gate_ttl: float = Field(default=0.05, gt=0)
    # Adaptive flex (issue 13; flexroute.routing.adaptive): the default mode for requests
    # without x-flex-mode, the P(start within the budget) below which flex is skipped, the
    # availability model's half-life, memory (observations) and the observations it needs
    # before it predicts, the probe budget while
    # flex is predicted down.
    flex_mode: Literal["adaptive", "always"] = "adaptive"
    flex_threshold: float = Field(default=0.2, ge=0, le=1)
    flex_half_life: float = Field(default=30.0, gt=0)
    flex_memory: float = Field(default=12.0, gt=1)
    flex_min_observations: float = Field(default=2.0, gt=0)
    flex_probe_interval: float = Field(default=0.5, ge=0)
    flex_probe_every: int = Field(default=2, ge=1)

    # Provider keys held by the server (sidecar mode). Read without the prefix, as the
    # providers' own SDKs do.
    openai_api_key: SecretStr | None = Field(default=None, validation_alias="OPENAI_API_KEY")
    gemini_api_key: SecretStr | None = Field(default=None, validation_alias="GEMINI_API_KEY")
    google_api_key: SecretStr | None = Field(default=None, validation_alias="GOOGLE_API_KEY")
    anthropic_api_key: SecretStr | None = Field(default=None, validation_alias="ANTHROPIC_API_KEY")

    @field_validator("default_start_within", mode="before")
    @classmethod
    def _parse_default_start_within(cls, value: object) -> float | None:
        if value is None or value == "":
            return None
        return parse_start_within(value, field="FLEXROUTE_DEFAULT_START_WITHIN")

    @field_validator("rate_limits")
    @classmethod
    def _fill_rate_limits(cls, value: dict[str, int]) -> dict[str, int]:
        unknown = set(value) - set(DEFAULT_RATE_LIMITS)
        if unknown or any(limit < 0 for limit in value.values()):
            raise ValueError(
                "FLEXROUTE_RATE_LIMITS is JSON like "
                '{"free": 10, "elevated": 60, "paid": 300} with non-negative limits; '
                f"got {value}"
            )
        return {**DEFAULT_RATE_LIMITS, **value}

    @field_validator("tier_thresholds")
    @classmethod
    def _fill_thresholds(cls, value: dict[str, Decimal]) -> dict[str, Decimal]:
        if set(value) - {"elevated", "paid"}:
            raise ValueError(
                'FLEXROUTE_TIER_THRESHOLDS is JSON like {"elevated": "20", "paid": "500"}; '
                f"got {value}"
            )
        return {**DEFAULT_TIER_THRESHOLDS, **value}

    @field_validator("fee_rate")
    @classmethod
    def _check_fee_rate(cls, value: Decimal) -> Decimal:
        if not Decimal(0) <= value <= Decimal(1):
            raise ValueError(f"FLEXROUTE_FEE_RATE must be between 0 and 1, got {value}")
        return value

    @field_validator("openai_base_url", "gemini_base_url", "anthropic_base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"base URL must start with http:// or https://, got {value!r}")
        return value.rstrip("/")

    @field_validator("stripe_js_url")
    @classmethod
    def _check_stripe_js_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(
                f"FLEXROUTE_STRIPE_JS_URL must be an http(s) URL such as "
                f"https://js.stripe.com/v3/, got {value!r}"
            )
        return value
