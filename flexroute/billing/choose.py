"""Which payment processor ``FLEXROUTE_PAYMENT_PROCESSOR`` names. It lives above the
processors it picks, so none of them imports the module that imports it."""

from __future__ import annotations

from flexroute.billing.processors import ManualProcessor, PaymentProcessor
from flexroute.billing.stripe_processor import StripeProcessor
from flexroute.config import Settings
from flexroute.errors import ConfigError

__all__ = ["processor_for"]


def processor_for(settings: Settings) -> PaymentProcessor:
    """The processor ``FLEXROUTE_PAYMENT_PROCESSOR`` names."""
    if settings.payment_processor == "manual":
        return ManualProcessor()
    if settings.payment_processor == "stripe":
        if settings.stripe_api_key is None:
            raise ConfigError(
                "FLEXROUTE_PAYMENT_PROCESSOR=stripe needs FLEXROUTE_STRIPE_API_KEY (sk_…)"
            )
        return StripeProcessor(
            settings.stripe_api_key.get_secret_value(),
            api_base=settings.stripe_api_base,
            webhook_secret=None
            if settings.stripe_webhook_secret is None
            else settings.stripe_webhook_secret.get_secret_value(),
        )
    raise ConfigError(
        f"FLEXROUTE_PAYMENT_PROCESSOR {settings.payment_processor!r} is unknown: "
        "use manual or stripe"
    )
